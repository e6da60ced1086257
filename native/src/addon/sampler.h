#pragma once

#include <string>
#include <vector>

#include "addon.h"

namespace hearth {

// A token's log-probability among the row's raw logits, and the most likely alternatives.
struct TokenLogprobs {
    llama_token token = LLAMA_TOKEN_NULL;
    float logprob = 0.0f;
    std::vector<std::pair<llama_token, float>> top;  // by logprob, highest first
};

class AddonSampler : public Napi::ObjectWrap<AddonSampler> {
  public:
    static Napi::FunctionReference constructor;
    static void Init(Napi::Env env, Napi::Object exports);

    explicit AddonSampler(const Napi::CallbackInfo & info);
    ~AddonSampler() override;

    bool live() const { return chain_ != nullptr; }
    // Samples row `idx` of the context's last decode (grammar first, then the chain) and accepts the
    // token. Runs on the decoding thread. When the grammar admits no token the output is complete: the
    // vocabulary's end-of-sequence token is returned, so this request stops and the batch's others go on.
    llama_token Sample(llama_context * ctx, int32_t idx);
    // The chosen token's log-probability, when the settings asked for it (nProbs >= 0).
    bool wants_logprobs() const { return n_probs_ >= 0; }
    TokenLogprobs Logprobs(llama_context * ctx, int32_t idx, llama_token token) const;

    std::atomic<bool> in_use{false};

  private:
    Napi::Value Accept(const Napi::CallbackInfo & info);
    Napi::Value Replay(const Napi::CallbackInfo & info);
    Napi::Value Reset(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);
    void Free();

    llama_sampler * chain_ = nullptr;
    llama_sampler * grammar_ = nullptr;  // separate: prompt tokens fed to accept() must not reach it
    std::vector<llama_token> grammar_prefill_;
    std::vector<llama_token_data> cur_;
    int32_t n_vocab_ = 0;
    int32_t n_probs_ = -1;
    llama_token eos_ = LLAMA_TOKEN_NULL;
};

// A grammar sampler (lazy when triggers are given), or INVALID_ARGUMENT naming what does not parse.
llama_sampler * InitGrammarSampler(const llama_vocab * vocab, const std::string & grammar, bool lazy,
                                   const std::vector<std::string> & trigger_patterns,
                                   const std::vector<llama_token> & trigger_tokens);

}  // namespace hearth
