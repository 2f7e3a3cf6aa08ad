/*
 * tools.h - OpenAI tool calls ("tools", "tool_choice", tool messages) for
 * models whose chat templates know nothing of tools.
 *
 * The functions are described to the model in the system message, and a
 * reply that calls them is one JSON object,
 *     {"tool_calls": [{"name": "f", "arguments": {...}}, ...]}
 * which JSON mode holds to the functions' parameter schemas: a call can
 * only name a function that exists, with arguments its schema accepts.
 * With tool_choice "auto" the constraint is optional (the reply is plain
 * text unless it begins with '{'); with "required" or a named function it
 * is not. The history is rendered the same way: an assistant message's
 * tool_calls as that object, tool results as a user message.
 *
 * A reply makes one call unless the request sends "parallel_tool_calls":
 * true (OpenAI's default is true): small models asked for a list of calls
 * tend to repeat the first until max_tokens. Even then a reply holds at
 * most TOOLS_MAX_PARALLEL calls, so such a reply ends as whole calls.
 *
 * Like api.c, everything here is a pure function of its arguments.
 */
#ifndef FRUGAL_SERVER_TOOLS_H
#define FRUGAL_SERVER_TOOLS_H

#include <cjson/cJSON.h>
#include "api.h"

#define TOOLS_MAX 64 /* functions a request may offer (JSON mode's alternatives of a union) */
#define TOOLS_MAX_PARALLEL 16 /* calls in one reply with "parallel_tool_calls": true */

/* Reads "tools", "tool_choice" and "parallel_tool_calls" of a chat
 * request into r->tools, r->tool_schema and r->tool_prompt. 0, or -1 with
 * err filled. */
int tools_parse(const cJSON *request, api_request *r, api_error *err);

/* An assistant message's "tool_calls" as the reply that makes them (the
 * object above, malloc'd), or NULL with err filled. */
char *tools_calls_text(const cJSON *tool_calls, api_error *err);

/* The name of the function that the call `id`, made by an assistant
 * message of msgs before message `before`, called; NULL when none did. */
const char *tools_called_name(const cJSON *msgs, const cJSON *before, const char *id);

/* True when a reply's text is (the beginning of) a call: its first byte
 * other than whitespace is '{'. *undecided: only whitespace so far. */
bool tools_text_is_call(const char *text, size_t len, bool *undecided);

/* A finished call's text as OpenAI's "tool_calls" list, ids made from
 * id_base ("call_..."); NULL when the text is not such an object (cut
 * short) or out of memory. */
cJSON *tools_reply_calls(const char *text, size_t len, const char *id_base);

#endif
