/*
 * fuzz_chat.c - libFuzzer target: chat templates.
 *
 * The whole input, as template text (not NUL-terminated, exact size):
 * fr_chat_detect and fr_chat_default_system.
 *
 * Then byte 0 is flags and the rest NUL-separated fields:
 *   bits 0-1  template: 0 ChatML, 1 Gemma, 2 none, 3 whatever
 *             fr_chat_detect says of the first field
 *   bit 2     add_generation_prompt
 *   bit 3     the first field is a template: its default system message
 *             (fr_chat_default_system) is passed to the renderer
 *   bit 4     the last message gets a NULL content
 *   bit 5     a NULL role on the first message
 * and the remaining fields alternate role, content. A role field of one
 * byte below 8 stands for system/user/assistant (byte % 3); any other
 * role field is used as is (an unknown role).
 *
 * Checks: success <=> a string came back; a failure leaves a message; a
 * ChatML rendering has exactly the length its parts add up to and a Gemma
 * one ends with the generation prompt when asked.
 */
#include <string.h>
#include "chat.h"
#include "fuzz.h"

#define MAX_MSGS 64

static const char *const roles[3] = { "system", "user", "assistant" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int detected = fr_chat_detect((const char *)data, size);
    FUZZ_CHECK(fr_chat_name(detected) != NULL);
    char *sys = fr_chat_default_system((const char *)data, size);
    if (sys) FUZZ_CHECK(strlen(sys) <= size);
    free(sys);
    if (size < 1) return 0;

    unsigned flags = data[0];
    /* NUL-terminated copy so fields can be used as C strings */
    char *buf = malloc(size);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0;
    const char *fields[2 * MAX_MSGS + 1];
    size_t n_fields = 0;
    for (size_t at = 0; at < size && n_fields < 2 * MAX_MSGS + 1;) {
        fields[n_fields++] = buf + at;
        at += strlen(buf + at) + 1;
    }

    size_t f = 0;
    int kind = (int[]){ FR_CHAT_CHATML, FR_CHAT_GEMMA, FR_CHAT_NONE, -1 }[flags & 3];
    char *default_system = NULL;
    if ((flags & 8) || kind < 0) {
        const char *tmpl = f < n_fields ? fields[f++] : "";
        if (kind < 0) kind = fr_chat_detect(tmpl, strlen(tmpl));
        if (flags & 8) default_system = fr_chat_default_system(tmpl, strlen(tmpl));
    }
    frugal_chat_msg msgs[MAX_MSGS];
    size_t n = 0;
    for (; f + 1 < n_fields && n < MAX_MSGS; f += 2, n++) {
        const char *r = fields[f];
        msgs[n].role = strlen(r) == 1 && (unsigned char)r[0] < 8 ? roles[r[0] % 3] : r;
        msgs[n].content = fields[f + 1];
    }
    if ((flags & 16) && n > 0) msgs[n - 1].content = NULL;
    if ((flags & 32) && n > 0) msgs[0].role = NULL;

    bool add_gen = flags & 4;
    char *out = (char *)"unset";
    frugal_status st = fr_chat_render(kind, default_system, msgs, n, add_gen, &out);
    if (st != FRUGAL_OK) {
        FUZZ_CHECK(out == NULL && frugal_last_error()[0] != 0);
    } else {
        FUZZ_CHECK(out != NULL);
        size_t len = strlen(out);
        if (kind == FR_CHAT_CHATML) {
            size_t want = add_gen ? strlen("<|im_start|>assistant\n") : 0;
            for (size_t i = 0; i < n; i++)
                want += strlen("<|im_start|>\n<|im_end|>\n") + strlen(msgs[i].role) +
                        strlen(msgs[i].content);
            if (n > 0 && default_system && strcmp(msgs[0].role, "system") != 0)
                want += strlen("<|im_start|>system\n<|im_end|>\n") + strlen(default_system);
            FUZZ_CHECK(len == want);
        } else {
            const char *gen = "<start_of_turn>model\n";
            FUZZ_CHECK(!add_gen || (len >= strlen(gen) && !strcmp(out + len - strlen(gen), gen)));
        }
        free(out);
    }
    free(default_system);
    free(buf);
    return 0;
}
