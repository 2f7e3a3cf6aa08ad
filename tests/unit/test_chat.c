/*
 * test_chat.c - template detection and the exact text rendered for ChatML
 * (SmolLM2) and Gemma conversations.
 */
#include <stdlib.h>
#include "unit.h"
#include "chat.h"

/* SmolLM2-135M-Instruct's template, as stored in its GGUF. */
static const char smollm2_template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

static const char smollm2_default[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

static const char gemma_template[] =
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}...{{ '<start_of_turn>' + role + "
    "'\\n' }}...{{ '<end_of_turn>\\n' }}{%- if add_generation_prompt -%}"
    "{{'<start_of_turn>model\\n'}}{%- endif -%}";

/* Renders and compares with the expected text. */
static bool renders(int kind, const char *sys, const frugal_chat_msg *m, size_t n, bool gen,
                    const char *want) {
    char *out = NULL;
    frugal_status st = fr_chat_render(kind, sys, m, n, gen, &out);
    bool ok = st == FRUGAL_OK && out && !strcmp(out, want);
    if (!ok)
        fprintf(stderr, "  got %s: [%s]\n  want [%s]\n", frugal_status_str(st), out ? out : "",
                want);
    free(out);
    return ok;
}

TEST(chat_detect) {
    CHECK(fr_chat_detect(NULL, 0) == FR_CHAT_NONE);
    CHECK(fr_chat_detect("", 0) == FR_CHAT_NONE);
    CHECK(fr_chat_detect(smollm2_template, strlen(smollm2_template)) == FR_CHAT_CHATML);
    CHECK(fr_chat_detect(gemma_template, strlen(gemma_template)) == FR_CHAT_GEMMA);
    const char *llama3 =
        "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>";
    CHECK(fr_chat_detect(llama3, strlen(llama3)) == FR_CHAT_UNKNOWN);
    /* Only the given length counts. */
    CHECK(fr_chat_detect("<|im_start|>", 5) == FR_CHAT_UNKNOWN);
    CHECK(!strcmp(fr_chat_name(FR_CHAT_CHATML), "chatml"));
    CHECK(!strcmp(fr_chat_name(FR_CHAT_GEMMA), "gemma"));
    CHECK(!strcmp(fr_chat_name(FR_CHAT_NONE), "none"));
    CHECK(!strcmp(fr_chat_name(FR_CHAT_UNKNOWN), "unknown"));
}

TEST(chat_default_system) {
    char *sys = fr_chat_default_system(smollm2_template, strlen(smollm2_template));
    CHECK(sys && !strcmp(sys, smollm2_default));
    free(sys);
    /* The same template with JSON-style escapes. */
    const char escaped[] = "{{ '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}";
    sys = fr_chat_default_system(escaped, strlen(escaped));
    CHECK(sys && !strcmp(sys, "You are Qwen."));
    free(sys);
    /* A system turn filled from the messages is not a default. */
    const char plain[] = "{{'<|im_start|>system\n' + message['content'] + '<|im_end|>'}}";
    CHECK(fr_chat_default_system(plain, strlen(plain)) == NULL);
    CHECK(fr_chat_default_system(gemma_template, strlen(gemma_template)) == NULL);
    CHECK(fr_chat_default_system(NULL, 0) == NULL);
}

TEST(chat_chatml) {
    const frugal_chat_msg user_only[] = { { "user", "Hi!" } };
    CHECK(renders(FR_CHAT_CHATML, smollm2_default, user_only, 1, true,
                  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                  "Hugging Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                  "<|im_start|>assistant\n"));
    const frugal_chat_msg with_system[] = {
        { "system", "Be brief." }, { "user", "2+2?" }, { "assistant", "4" }, { "user", "3+3?" },
    };
    CHECK(renders(FR_CHAT_CHATML, smollm2_default, with_system, 4, false,
                  "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                  "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n"));
    /* No default: no system turn; content is not trimmed. */
    const frugal_chat_msg spaced[] = { { "user", "  x \n" } };
    CHECK(renders(FR_CHAT_CHATML, NULL, spaced, 1, true,
                  "<|im_start|>user\n  x \n<|im_end|>\n<|im_start|>assistant\n"));
    /* An empty conversation gets no default system message either. */
    CHECK(renders(FR_CHAT_CHATML, smollm2_default, NULL, 0, true, "<|im_start|>assistant\n"));
    CHECK(renders(FR_CHAT_CHATML, NULL, NULL, 0, false, ""));
}

TEST(chat_gemma) {
    const frugal_chat_msg convo[] = {
        { "system", "You are terse." }, { "user", " Hello \n" }, { "assistant", "Hi." },
        { "user", "Bye" },
    };
    CHECK(renders(FR_CHAT_GEMMA, NULL, convo, 4, true,
                  "<start_of_turn>user\nYou are terse.\n\nHello<end_of_turn>\n"
                  "<start_of_turn>model\nHi.<end_of_turn>\n"
                  "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"));
    CHECK(renders(FR_CHAT_GEMMA, NULL, convo + 1, 1, false,
                  "<start_of_turn>user\nHello<end_of_turn>\n"));
    /* The default system message is a ChatML thing; Gemma ignores it. */
    CHECK(renders(FR_CHAT_GEMMA, "ignored", convo + 1, 1, true,
                  "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"));
}

TEST(chat_rejects_bad_messages) {
    char *out = (char *)1;
    const frugal_chat_msg tool[] = { { "tool", "x" } };
    CHECK(fr_chat_render(FR_CHAT_CHATML, NULL, tool, 1, true, &out) == FRUGAL_ERR_TEMPLATE);
    CHECK(out == NULL && strstr(frugal_last_error(), "tool"));
    const frugal_chat_msg no_content[] = { { "user", NULL } };
    CHECK(fr_chat_render(FR_CHAT_CHATML, NULL, no_content, 1, true, &out) == FRUGAL_ERR_TEMPLATE);
    CHECK(strstr(frugal_last_error(), "no content"));
    const frugal_chat_msg no_role[] = { { NULL, "x" } };
    CHECK(fr_chat_render(FR_CHAT_GEMMA, NULL, no_role, 1, true, &out) == FRUGAL_ERR_TEMPLATE);
    const frugal_chat_msg two_users[] = { { "user", "a" }, { "user", "b" } };
    CHECK(fr_chat_render(FR_CHAT_GEMMA, NULL, two_users, 2, true, &out) == FRUGAL_ERR_TEMPLATE);
    CHECK(strstr(frugal_last_error(), "alternate"));
    const frugal_chat_msg late_system[] = { { "user", "a" }, { "system", "b" } };
    CHECK(fr_chat_render(FR_CHAT_GEMMA, NULL, late_system, 2, true, &out) == FRUGAL_ERR_TEMPLATE);
    const frugal_chat_msg ok[] = { { "user", "a" } };
    CHECK(fr_chat_render(FR_CHAT_UNKNOWN, NULL, ok, 1, true, &out) == FRUGAL_ERR_TEMPLATE);
    CHECK(fr_chat_render(FR_CHAT_NONE, NULL, ok, 1, true, &out) == FRUGAL_ERR_TEMPLATE);
    CHECK(out == NULL);
}

TEST(chat_out_of_memory) {
    const frugal_chat_msg m[] = { { "user", "hello" } };
    char *out = NULL;
    long n;
    for (n = 1; n < 100; n++) {
        fr_alloc_fail_after(n);
        frugal_status st = fr_chat_render(FR_CHAT_CHATML, smollm2_default, m, 1, true, &out);
        fr_alloc_fail_after(0);
        if (st == FRUGAL_OK) break;
        CHECK(st == FRUGAL_ERR_NOMEM && out == NULL);
    }
    CHECK(out != NULL && n > 1);
    free(out);
}
