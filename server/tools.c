/*
 * tools.c - tool calls: the functions a request offers, as a system
 * message for the model and a JSON Schema for its reply (see tools.h).
 *
 * The reply's schema puts each function's parameters under $defs, so that
 * the $refs inside them (pydantic writes nested models as "#/$defs/X")
 * still resolve: function i's parameters become "#/$defs/fI", its own
 * definitions "#/$defs/fI.X", and its $refs are rewritten to match.
 * Several functions are a union of call objects told apart by their
 * constant "name", which JSON mode follows as a discriminated union.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tools.h"

/* A field, or NULL when absent or null ("not given"). */
static const cJSON *get(const cJSON *o, const char *name) {
    const cJSON *it = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
    return it && !cJSON_IsNull(it) ? it : NULL;
}

static int bad(api_error *err, const char *param, const char *msg) {
    api_set_error(err, 400, NULL, param, NULL, "%s", msg);
    return -1;
}

static int nomem(api_error *err) {
    api_set_error(err, 500, "server_error", NULL, NULL, "out of memory");
    return -1;
}

/* OpenAI's rule for function names: 1-64 of a-z, A-Z, 0-9, _ and -. */
static bool valid_name(const char *s) {
    size_t n = strlen(s);
    return n >= 1 && n <= 64 && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

/* ---- The reply's schema ---------------------------------------------------- */

/* Rewrites the $refs of one function's schema to where its definitions
 * now live. Values (const, enum, default, examples) are data, not schema,
 * and are left alone. */
static bool rewrite_refs(cJSON *s, const char *prefix) {
    cJSON *it;
    cJSON_ArrayForEach(it, s) {
        const char *key = it->string ? it->string : "";
        if (!strcmp(key, "const") || !strcmp(key, "enum") || !strcmp(key, "default") || !strcmp(key, "examples"))
            continue;
        if (!strcmp(key, "$ref") && cJSON_IsString(it)) {
            const char *r = it->valuestring, *name = NULL;
            if (!strncmp(r, "#/$defs/", 8)) name = r + 8;
            else if (!strncmp(r, "#/definitions/", 14)) name = r + 14;
            else if (strcmp(r, "#")) continue; /* (refused by the compiler, with its message) */
            size_t n = strlen(prefix) + (name ? strlen(name) + 1 : 0) + 9;
            char *to = malloc(n);
            if (!to) return false;
            snprintf(to, n, "#/$defs/%s%s%s", prefix, name ? "." : "", name ? name : "");
            bool ok = cJSON_SetValuestring(it, to) != NULL;
            free(to);
            if (!ok) return false;
        } else if ((cJSON_IsObject(it) || cJSON_IsArray(it)) && !rewrite_refs(it, prefix)) {
            return false;
        }
    }
    return true;
}

/* Moves a function's parameters (a copy) and their definitions into defs. */
static bool add_parameters(cJSON *defs, const cJSON *params, int i) {
    char prefix[16], key[300];
    snprintf(prefix, sizeof prefix, "f%d", i);
    static const char empty[] = "{\"type\":\"object\",\"additionalProperties\":false}"; /* no parameters: {} */
    cJSON *p = params ? cJSON_Duplicate(params, true) : cJSON_Parse(empty);
    if (!p || !rewrite_refs(p, prefix)) { cJSON_Delete(p); return false; }
    static const char *const holders[] = { "$defs", "definitions" };
    for (int h = 0; h < 2; h++) {
        cJSON *held = cJSON_DetachItemFromObjectCaseSensitive(p, holders[h]), *d;
        while (cJSON_IsObject(held) && (d = held->child)) {
            cJSON_DetachItemViaPointer(held, d);
            snprintf(key, sizeof key, "%s.%.280s", prefix, d->string);
            if (cJSON_GetObjectItemCaseSensitive(defs, key)) { /* (named in both holders: the first wins) */
                cJSON_Delete(d);
            } else if (!cJSON_AddItemToObject(defs, key, d)) {
                cJSON_Delete(d);
                cJSON_Delete(held);
                cJSON_Delete(p);
                return false;
            }
        }
        cJSON_Delete(held);
    }
    if (!cJSON_AddItemToObject(defs, prefix, p)) { cJSON_Delete(p); return false; }
    return true;
}

/* {"type": "object", "properties": {"name": {"const": NAME}, "arguments":
 * {"$ref": "#/$defs/fI"}}, "required": ["name", "arguments"]} */
static cJSON *call_schema(const char *name, int i) {
    char text[256];
    snprintf(text, sizeof text, "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"%s\"},"
             "\"arguments\":{\"$ref\":\"#/$defs/f%d\"}},\"required\":[\"name\",\"arguments\"]}", name, i);
    return cJSON_Parse(text); /* (names are checked: nothing in one needs escaping) */
}

/* The reply's schema for the functions fns[0..n) (all offered, or the one
 * named), one call at most unless parallel. */
static char *reply_schema(const cJSON *const *fns, int n, bool parallel) {
    cJSON *root = cJSON_Parse("{\"type\":\"object\",\"properties\":{\"tool_calls\":{\"type\":\"array\","
                              "\"minItems\":1}},\"required\":[\"tool_calls\"]}");
    cJSON *calls = root ? cJSON_GetObjectItem(cJSON_GetObjectItem(root, "properties"), "tool_calls") : NULL;
    cJSON *defs = root ? cJSON_AddObjectToObject(root, "$defs") : NULL;
    cJSON *alts = n > 1 ? cJSON_CreateArray() : NULL;
    bool ok = calls && defs && (n == 1 || alts) &&
              cJSON_AddNumberToObject(calls, "maxItems", parallel ? TOOLS_MAX_PARALLEL : 1);
    for (int i = 0; ok && i < n; i++) {
        cJSON *c = call_schema(get(fns[i], "name")->valuestring, i);
        ok = c && add_parameters(defs, get(fns[i], "parameters"), i) &&
             (n == 1 ? cJSON_AddItemToObject(calls, "items", c) : cJSON_AddItemToArray(alts, c));
        if (!ok) cJSON_Delete(c);
    }
    cJSON *items = ok && n > 1 ? cJSON_AddObjectToObject(calls, "items") : NULL;
    if (items && cJSON_AddItemToObject(items, "anyOf", alts)) alts = NULL;
    else if (n > 1) ok = false;
    cJSON_Delete(alts);
    char *s = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s;
}

/* ---- The system message ----------------------------------------------------- */

typedef struct { char *s; size_t len, cap; bool failed; } text;

static void add(text *t, const char *s) {
    size_t n = strlen(s);
    if (t->failed) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *p = realloc(t->s, cap);
        if (!p) { t->failed = true; return; }
        t->s = p, t->cap = cap;
    }
    memcpy(t->s + t->len, s, n + 1);
    t->len += n;
}

/* Each function as a line of JSON: {"name", "description", "parameters"}. */
static void describe(text *t, const cJSON *fn) {
    cJSON *d = cJSON_CreateObject();
    static const char *const keys[] = { "name", "description", "parameters" };
    bool ok = d != NULL;
    for (int k = 0; ok && k < 3; k++) {
        const cJSON *v = get(fn, keys[k]);
        cJSON *copy = v ? cJSON_Duplicate(v, true) : NULL;
        ok = !v || (copy && cJSON_AddItemToObject(d, keys[k], copy));
        if (!ok) cJSON_Delete(copy);
    }
    char *line = ok ? cJSON_PrintUnformatted(d) : NULL;
    cJSON_Delete(d);
    if (!line) { t->failed = true; return; }
    add(t, line);
    add(t, "\n");
    free(line);
}

static char *system_text(const cJSON *const *fns, int n, bool required, const char *named, bool parallel) {
    text t = { 0 };
    add(&t, "You can call these functions:\n");
    for (int i = 0; i < n; i++) describe(&t, fns[i]);
    if (named) {
        add(&t, "You must call the function ");
        add(&t, named);
        add(&t, ". Reply with only a JSON object of this form, and nothing else:\n");
    } else {
        add(&t, required ? "You must call one or more of them. Reply with only a JSON object of this form, "
                           "and nothing else:\n"
                         : "To call functions, reply with only a JSON object of this form, and nothing else:\n");
    }
    add(&t, "{\"tool_calls\": [{\"name\": \"<function name>\", \"arguments\": {<its arguments>}}]}\n");
    if (!parallel) add(&t, "Make one call at a time.\n");
    if (!required) add(&t, "Otherwise reply in plain text.\n");
    add(&t, "The results of calls come back in the next message.");
    if (t.failed) { free(t.s); return NULL; }
    return t.s;
}

/* ---- Parsing the request ---------------------------------------------------- */

/* The functions of "tools", checked: fns[i] is each tool's "function". */
static int parse_functions(const cJSON *tools, const cJSON **fns, int *n, api_error *err) {
    if (!cJSON_IsArray(tools)) return bad(err, "tools", "'tools' must be a list of {\"type\": \"function\", ...}");
    if (cJSON_GetArraySize(tools) > TOOLS_MAX) {
        api_set_error(err, 400, NULL, "tools", NULL, "'tools' holds at most %d functions", TOOLS_MAX);
        return -1;
    }
    const cJSON *tool;
    *n = 0;
    cJSON_ArrayForEach(tool, tools) {
        const cJSON *type = get(tool, "type"), *fn = get(tool, "function");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "function") || !cJSON_IsObject(fn))
            return bad(err, "tools", "each tool must be {\"type\": \"function\", \"function\": {...}}");
        const cJSON *name = get(fn, "name"), *desc = get(fn, "description"), *params = get(fn, "parameters");
        if (!cJSON_IsString(name) || !valid_name(name->valuestring))
            return bad(err, "tools", "a function's 'name' must be 1 to 64 letters, digits, '_' or '-'");
        if (desc && !cJSON_IsString(desc)) return bad(err, "tools", "a function's 'description' must be a string");
        const cJSON *ptype = get(params, "type");
        bool object = !ptype || (cJSON_IsString(ptype) && !strcmp(ptype->valuestring, "object"));
        if (params && (!cJSON_IsObject(params) || !object))
            return bad(err, "tools", "a function's 'parameters' must be a JSON Schema of an object");
        for (int i = 0; i < *n; i++)
            if (!strcmp(get(fns[i], "name")->valuestring, name->valuestring)) {
                api_set_error(err, 400, NULL, "tools", NULL, "two functions are named '%s'", name->valuestring);
                return -1;
            }
        fns[(*n)++] = fn;
    }
    return 0;
}

/* tool_choice: "none", "auto", "required" or {"type": "function",
 * "function": {"name": ...}} (*named: that function's index). */
static int parse_choice(const cJSON *choice, const cJSON *const *fns, int n, api_tools *mode, int *named,
                        api_error *err) {
    *named = -1;
    *mode = n ? TOOLS_AUTO : TOOLS_OFF;
    if (!choice) return 0;
    if (cJSON_IsString(choice)) {
        const char *c = choice->valuestring;
        bool none = !strcmp(c, "none"), required = !strcmp(c, "required");
        if (!none && !required && strcmp(c, "auto"))
            return bad(err, "tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                                           "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        if (required && !n) return bad(err, "tool_choice", "'tool_choice' needs 'tools'");
        if (none) *mode = TOOLS_OFF;
        if (required) *mode = TOOLS_REQUIRED;
        return 0;
    }
    const cJSON *type = get(choice, "type"), *fn = get(choice, "function"), *name = get(fn, "name");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "function") || !cJSON_IsString(name))
        return bad(err, "tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                                       "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    for (int i = 0; i < n; i++)
        if (!strcmp(get(fns[i], "name")->valuestring, name->valuestring)) {
            *named = i;
            *mode = TOOLS_REQUIRED;
            return 0;
        }
    api_set_error(err, 400, NULL, "tool_choice", NULL, "'tool_choice' names '%.64s', which 'tools' does not offer",
                  name->valuestring);
    return -1;
}

int tools_parse(const cJSON *request, api_request *r, api_error *err) {
    const cJSON *tools = get(request, "tools"), *fns[TOOLS_MAX], *ptc = get(request, "parallel_tool_calls");
    int n = 0, named;
    if (tools && parse_functions(tools, fns, &n, err)) return -1;
    if (ptc && !cJSON_IsBool(ptc))
        return bad(err, "parallel_tool_calls", "'parallel_tool_calls' must be true or false");
    bool parallel = cJSON_IsTrue(ptc); /* (tools.h: not OpenAI's default) */
    if (parse_choice(get(request, "tool_choice"), fns, n, &r->tools, &named, err)) return -1;
    if (r->tools == TOOLS_OFF) return 0;
    const cJSON *const *offered = named >= 0 ? &fns[named] : fns;
    int n_offered = named >= 0 ? 1 : n;
    r->tool_schema = reply_schema(offered, n_offered, parallel);
    r->tool_prompt = system_text(fns, n, r->tools == TOOLS_REQUIRED,
                                 named >= 0 ? get(fns[named], "name")->valuestring : NULL, parallel);
    return r->tool_schema && r->tool_prompt ? 0 : nomem(err);
}

/* ---- The history --------------------------------------------------------------- */

/* One call of an assistant message as {"name": ..., "arguments": {...}}
 * added to list; -1 with err filled. */
static int add_history_call(cJSON *list, const cJSON *call, api_error *err) {
    const cJSON *id = get(call, "id"), *fn = get(call, "function"), *name = get(fn, "name");
    const cJSON *a = get(fn, "arguments");
    if (!cJSON_IsString(id) || !cJSON_IsString(name) || !cJSON_IsString(a))
        return bad(err, "messages",
                   "each tool call needs an 'id' and a 'function' with 'name' and 'arguments' strings");
    cJSON *args = cJSON_Parse(a->valuestring), *c = args ? cJSON_CreateObject() : NULL;
    if (!args) return bad(err, "messages", "a tool call's 'arguments' must be JSON text");
    if (!c || !cJSON_AddItemToArray(list, c)) {
        cJSON_Delete(c);
        cJSON_Delete(args);
        return nomem(err);
    }
    if (!cJSON_AddStringToObject(c, "name", name->valuestring) || !cJSON_AddItemToObject(c, "arguments", args)) {
        cJSON_Delete(args);
        return nomem(err);
    }
    return 0;
}

char *tools_calls_text(const cJSON *tool_calls, api_error *err) {
    if (!cJSON_IsArray(tool_calls) || !tool_calls->child) {
        bad(err, "messages", "an assistant message's 'tool_calls' must be a non-empty list");
        return NULL;
    }
    cJSON *root = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(root, "tool_calls");
    const cJSON *call;
    int rc = list ? 0 : nomem(err);
    for (call = tool_calls->child; call && !rc; call = call->next) rc = add_history_call(list, call, err);
    char *s = rc ? NULL : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!rc && !s) nomem(err);
    return s;
}

const char *tools_called_name(const cJSON *msgs, const cJSON *before, const char *id) {
    const char *found = NULL;
    for (const cJSON *m = msgs->child; m && m != before; m = m->next) {
        const cJSON *calls = get(m, "tool_calls"), *call;
        if (!cJSON_IsArray(calls)) continue;
        cJSON_ArrayForEach(call, calls) {
            const cJSON *cid = get(call, "id"), *name = get(get(call, "function"), "name");
            if (cJSON_IsString(cid) && cJSON_IsString(name) && !strcmp(cid->valuestring, id))
                found = name->valuestring; /* (the latest, should ids repeat) */
        }
    }
    return found;
}

/* ---- The reply ------------------------------------------------------------------- */

bool tools_text_is_call(const char *text, size_t len, bool *undecided) {
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n')) i++;
    *undecided = i == len;
    return i < len && text[i] == '{';
}

/* The index of the quote that closes the string opening at t[i]. */
static size_t string_end(const char *t, size_t len, size_t i) {
    for (i++; i < len && t[i] != '"'; i++)
        if (t[i] == '\\') i++;
    return i;
}

/* The index of the bracket that closes the object or array at t[i]. */
static size_t container_end(const char *t, size_t len, size_t i) {
    for (int depth = 0; i < len; i++) {
        if (t[i] == '"') i = string_end(t, len, i);
        else if (t[i] == '{' || t[i] == '[') depth++;
        else if ((t[i] == '}' || t[i] == ']') && --depth == 0) break;
    }
    return i;
}

/* Where each call's arguments are in a reply's text: the value of the
 * "arguments" key of each object at the third level (the calls). The text
 * is JSON of the reply's schema (the constraint made it), so a string
 * after '{' or ',' at that level is a key, and arguments are objects.
 * Returns how many were found. */
static int argument_spans(const char *t, size_t len, size_t *start, size_t *end, int max) {
    int depth = 0, n = 0;
    bool key = false;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '"') {
            size_t close = string_end(t, len, i);
            if (depth == 3 && key && close - i == 10 && !memcmp(t + i + 1, "arguments", 9) && n < max) {
                size_t v = close + 1;
                while (v < len && t[v] != '{') v++; /* (past the colon and whitespace) */
                start[n] = v;
                close = container_end(t, len, v); /* (its closing brace: the loop goes on after it) */
                end[n++] = close + 1;
            }
            i = close;
            key = false;
        } else if (t[i] == '{' || t[i] == '[') {
            depth++;
            key = t[i] == '{';
        } else if (t[i] == '}' || t[i] == ']') {
            depth--;
        } else if (t[i] == ',') {
            key = depth == 3;
        }
    }
    return n;
}

/* One call of the reply in OpenAI's form, added to out, its arguments
 * the model's own text without the whitespace between tokens (numbers
 * stay as written); false when it is not {"name": "...", "arguments": ...}
 * or out of memory. */
static bool add_reply_call(cJSON *out, const cJSON *call, const char *id, const char *args, size_t args_len) {
    const cJSON *name = get(call, "name");
    char *args_text = cJSON_IsString(name) && get(call, "arguments") ? malloc(args_len + 1) : NULL;
    if (args_text) {
        memcpy(args_text, args, args_len);
        args_text[args_len] = 0;
        cJSON_Minify(args_text);
    }
    cJSON *c = args_text ? cJSON_CreateObject() : NULL, *fn;
    bool ok = c && cJSON_AddItemToArray(out, c);
    if (!ok) cJSON_Delete(c);
    ok = ok && cJSON_AddStringToObject(c, "id", id) && cJSON_AddStringToObject(c, "type", "function") &&
         (fn = cJSON_AddObjectToObject(c, "function")) && cJSON_AddStringToObject(fn, "name", name->valuestring) &&
         cJSON_AddStringToObject(fn, "arguments", args_text);
    free(args_text);
    return ok;
}

cJSON *tools_reply_calls(const char *text, size_t len, const char *id_base) {
    if (memchr(text, 0, len)) return NULL; /* (JSON mode writes none; cJSON would cut a string there) */
    cJSON *root = cJSON_ParseWithLength(text, len), *out = cJSON_CreateArray();
    const cJSON *calls = get(root, "tool_calls"), *call;
    size_t start[TOOLS_MAX_PARALLEL], end[TOOLS_MAX_PARALLEL];
    int n = root ? argument_spans(text, len, start, end, TOOLS_MAX_PARALLEL) : 0, i = 0;
    bool ok = out && cJSON_IsArray(calls) && cJSON_GetArraySize(calls) == n && n > 0;
    char id[96];
    cJSON_ArrayForEach(call, calls) {
        snprintf(id, sizeof id, "call_%.64s_%d", id_base, i);
        if (ok) ok = add_reply_call(out, call, id, text + start[i], end[i] - start[i]);
        i++;
    }
    cJSON_Delete(root);
    if (!ok) { cJSON_Delete(out); return NULL; }
    return out;
}
