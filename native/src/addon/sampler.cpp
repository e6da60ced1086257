// AddonSampler: one request's sampling chain (penalties, top-k, top-p, min-p, temperature, then
// greedy or seeded random choice). Settings are validated in TypeScript; this only builds the chain.
#include "sampler.h"

#include <cmath>
#include <vector>

#include "model.h"

namespace hearth {

Napi::FunctionReference AddonSampler::constructor;

// new AddonSampler(model, {temperature, topK, topP, minP, repeatPenalty, repeatLastN,
//                          frequencyPenalty, presencePenalty, seed, greedy, ignoreEos})
AddonSampler::AddonSampler(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonSampler>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(AddonModel::constructor.Value())) {
        ThrowJs(env, "INVALID_ARGUMENT", "AddonSampler(model, settings): model must be an AddonModel");
    }
    AddonModel * model = AddonModel::Unwrap(info[0].As<Napi::Object>());
    if (model->model() == nullptr) ThrowJs(env, "NOT_LOADED", "the model is not loaded");
    n_vocab_ = llama_vocab_n_tokens(model->vocab());
    Napi::Object s = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);

    const float temperature = static_cast<float>(GetNumber(s, "temperature", 0.8));
    const int32_t top_k = static_cast<int32_t>(GetNumber(s, "topK", 40));
    const float top_p = static_cast<float>(GetNumber(s, "topP", 0.95));
    const float min_p = static_cast<float>(GetNumber(s, "minP", 0.05));
    const float repeat_penalty = static_cast<float>(GetNumber(s, "repeatPenalty", 1.0));
    const int32_t repeat_last_n = static_cast<int32_t>(GetNumber(s, "repeatLastN", 64));
    const float freq_penalty = static_cast<float>(GetNumber(s, "frequencyPenalty", 0.0));
    const float presence_penalty = static_cast<float>(GetNumber(s, "presencePenalty", 0.0));
    const uint32_t seed = static_cast<uint32_t>(GetNumber(s, "seed", LLAMA_DEFAULT_SEED));
    const bool greedy = GetBool(s, "greedy", false) || temperature <= 0.0f;
    const bool ignore_eos = GetBool(s, "ignoreEos", false);

    llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    chain_ = llama_sampler_chain_init(cp);
    if (ignore_eos) {
        // As llama-server's ignore_eos: end-of-generation tokens can never be chosen.
        std::vector<llama_logit_bias> biases;
        for (llama_token t = 0; t < n_vocab_; t++) {
            if (llama_vocab_is_eog(model->vocab(), t)) biases.push_back({t, -INFINITY});
        }
        llama_sampler_chain_add(chain_, llama_sampler_init_logit_bias(n_vocab_, static_cast<int32_t>(biases.size()), biases.data()));
    }
    if (repeat_penalty != 1.0f || freq_penalty != 0.0f || presence_penalty != 0.0f) {
        llama_sampler_chain_add(chain_, llama_sampler_init_penalties(n_vocab_, repeat_last_n, repeat_penalty, freq_penalty, presence_penalty));
    }
    if (greedy) {
        llama_sampler_chain_add(chain_, llama_sampler_init_greedy());
        return;
    }
    if (top_k > 0) llama_sampler_chain_add(chain_, llama_sampler_init_top_k(top_k));
    if (top_p < 1.0f) llama_sampler_chain_add(chain_, llama_sampler_init_top_p(top_p, 1));
    if (min_p > 0.0f) llama_sampler_chain_add(chain_, llama_sampler_init_min_p(min_p, 1));
    llama_sampler_chain_add(chain_, llama_sampler_init_temp(temperature));
    llama_sampler_chain_add(chain_, llama_sampler_init_dist(seed));
}

AddonSampler::~AddonSampler() {
    if (chain_ != nullptr) llama_sampler_free(chain_);
}

// accept(tokens: Int32Array): feed tokens (the prompt) into the penalty history.
Napi::Value AddonSampler::Accept(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (chain_ == nullptr) ThrowJs(env, "DISPOSED", "the sampler was disposed");
    if (in_use.load()) ThrowJs(env, "INVALID_STATE", "the sampler is in use by a decode");
    if (info.Length() < 1 || !info[0].IsTypedArray()) ThrowJs(env, "INVALID_ARGUMENT", "accept(tokens): tokens must be an Int32Array");
    Napi::Int32Array arr = info[0].As<Napi::Int32Array>();
    for (size_t i = 0; i < arr.ElementLength(); i++) {
        if (arr[i] < 0 || arr[i] >= n_vocab_) ThrowJs(env, "INVALID_ARGUMENT", "accept: token " + std::to_string(arr[i]) + " is outside the vocabulary");
        llama_sampler_accept(chain_, arr[i]);
    }
    return env.Undefined();
}

Napi::Value AddonSampler::Reset(const Napi::CallbackInfo & info) {
    if (chain_ != nullptr && !in_use.load()) llama_sampler_reset(chain_);
    return info.Env().Undefined();
}

Napi::Value AddonSampler::Dispose(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (in_use.load()) ThrowJs(env, "INVALID_STATE", "the sampler is in use by a decode");
    if (chain_ != nullptr) {
        llama_sampler_free(chain_);
        chain_ = nullptr;
    }
    return env.Undefined();
}

void AddonSampler::Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "AddonSampler",
                                    {
                                        InstanceMethod("accept", &AddonSampler::Accept),
                                        InstanceMethod("reset", &AddonSampler::Reset),
                                        InstanceMethod("dispose", &AddonSampler::Dispose),
                                    });
    constructor = Napi::Persistent(fn);
    constructor.SuppressDestruct();
    exports.Set("AddonSampler", fn);
}

void InitSampler(Napi::Env env, Napi::Object exports) { AddonSampler::Init(env, exports); }

}  // namespace hearth
