// AddonSampler: one request's sampling: an optional grammar (GBNF, lazy when it waits for a trigger),
// then the chain (penalties, top-k, top-p, min-p, temperature, then greedy or seeded random choice).
// Settings are validated in TypeScript; this builds the samplers and reports what llama.cpp rejects.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <regex>
#include <vector>

#include "model.h"

namespace hearth {

Napi::FunctionReference AddonSampler::constructor;

namespace {

std::string Piece(const llama_vocab * vocab, llama_token token) {
    char buf[256];
    int32_t n = llama_token_to_piece(vocab, token, buf, sizeof(buf), 0, true);
    if (n < 0) {
        std::string big(static_cast<size_t>(-n), '\0');
        n = llama_token_to_piece(vocab, token, big.data(), static_cast<int32_t>(big.size()), 0, true);
        return big.substr(0, static_cast<size_t>(std::max(n, 0)));
    }
    return std::string(buf, static_cast<size_t>(n));
}

std::vector<llama_token> Tokenize(const llama_vocab * vocab, const std::string & text) {
    std::vector<llama_token> out(text.size() + 8);
    int32_t n = llama_tokenize(vocab, text.c_str(), static_cast<int32_t>(text.size()), out.data(), static_cast<int32_t>(out.size()), false, true);
    if (n < 0) {
        out.resize(static_cast<size_t>(-n));
        n = llama_tokenize(vocab, text.c_str(), static_cast<int32_t>(text.size()), out.data(), static_cast<int32_t>(out.size()), false, true);
    }
    out.resize(static_cast<size_t>(std::max(n, 0)));
    return out;
}

// Tokens whose pieces spell exactly `text`, for feeding a grammar what the prompt already said.
// llama-server tokenizes and drops a leading space token; an SPM vocabulary without the template's
// special tokens glues that space to the first character instead, so when the plain tokenization does
// not spell the text, tokenize after a newline (which SPM keeps as a byte of its own) and drop up to it.
std::vector<llama_token> TokensSpelling(const llama_vocab * vocab, const std::string & text) {
    auto spell = [&](const std::vector<llama_token> & toks, size_t from) {
        std::string s;
        for (size_t i = from; i < toks.size(); i++) s += Piece(vocab, toks[i]);
        return s;
    };
    std::vector<llama_token> plain = Tokenize(vocab, text);
    if (spell(plain, 0) == text) return plain;
    std::vector<llama_token> nl = Tokenize(vocab, "\n" + text);
    std::string head;
    for (size_t k = 0; k < nl.size(); k++) {
        head += Piece(vocab, nl[k]);
        if (!head.empty() && head.back() == '\n' && spell(nl, k + 1) == text) return {nl.begin() + static_cast<std::ptrdiff_t>(k) + 1, nl.end()};
    }
    throw NativeError("INVALID_ARGUMENT", "grammarPrefill: the text does not tokenize into pieces that spell it exactly");
}

std::vector<std::string> GetStrings(Napi::Env env, const Napi::Object & obj, const char * key) {
    std::vector<std::string> out;
    Napi::Value v = obj.Get(key);
    if (v.IsUndefined() || v.IsNull()) return out;
    if (!v.IsArray()) ThrowJs(env, "INVALID_ARGUMENT", std::string(key) + ": must be an array of strings");
    Napi::Array arr = v.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
        Napi::Value e = arr.Get(i);
        if (!e.IsString()) ThrowJs(env, "INVALID_ARGUMENT", std::string(key) + "[" + std::to_string(i) + "]: must be a string");
        out.push_back(e.As<Napi::String>().Utf8Value());
    }
    return out;
}

}  // namespace

llama_sampler * InitGrammarSampler(const llama_vocab * vocab, const std::string & grammar, bool lazy,
                                   const std::vector<std::string> & trigger_patterns,
                                   const std::vector<llama_token> & trigger_tokens) {
    if (grammar.empty()) throw NativeError("INVALID_ARGUMENT", "grammar: the grammar is empty");
    if (lazy && trigger_patterns.empty() && trigger_tokens.empty()) {
        throw NativeError("INVALID_ARGUMENT", "grammarLazy: a lazy grammar needs grammarTriggerPatterns or grammarTriggerTokens");
    }
    std::vector<const char *> patterns;
    for (const auto & p : trigger_patterns) patterns.push_back(p.c_str());
    // llama.cpp reports why a grammar fails through its log (the parser's own detail goes to stderr).
    LoadCapture capture;
    SetLoadCapture(&capture);
    llama_sampler * s = nullptr;
    try {
        s = lazy ? llama_sampler_init_grammar_lazy_patterns(vocab, grammar.c_str(), "root", patterns.data(), patterns.size(),
                                                            trigger_tokens.data(), trigger_tokens.size())
                 : llama_sampler_init_grammar(vocab, grammar.c_str(), "root");
    } catch (const std::regex_error & e) {
        SetLoadCapture(nullptr);
        throw NativeError("INVALID_ARGUMENT", std::string("grammarTriggerPatterns: a pattern is not a valid regular expression: ") + e.what());
    } catch (const std::exception & e) {
        SetLoadCapture(nullptr);
        throw NativeError("INVALID_ARGUMENT", std::string("grammar: the grammar does not parse: ") + e.what());
    }
    SetLoadCapture(nullptr);
    if (s == nullptr) {
        std::string reason = capture.errors.empty() ? "llama.cpp rejected it" : capture.errors.front();
        throw NativeError("INVALID_ARGUMENT", "grammar: the grammar does not parse: " + reason);
    }
    return s;
}

// new AddonSampler(model, {temperature, topK, topP, minP, repeatPenalty, repeatLastN,
//                          frequencyPenalty, presencePenalty, seed, greedy, ignoreEos,
//                          grammar, grammarLazy, grammarTriggerPatterns, grammarTriggerTokens,
//                          grammarPrefill, nProbs})
AddonSampler::AddonSampler(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonSampler>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(AddonModel::constructor.Value())) {
        ThrowJs(env, "INVALID_ARGUMENT", "AddonSampler(model, settings): model must be an AddonModel");
    }
    AddonModel * model = AddonModel::Unwrap(info[0].As<Napi::Object>());
    if (model->model() == nullptr) ThrowJs(env, "NOT_LOADED", "the model is not loaded");
    n_vocab_ = llama_vocab_n_tokens(model->vocab());
    eos_ = llama_vocab_eos(model->vocab()) != LLAMA_TOKEN_NULL ? llama_vocab_eos(model->vocab()) : llama_vocab_eot(model->vocab());
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
    const double n_probs = GetNumber(s, "nProbs", -1);
    n_probs_ = n_probs < 0 ? -1 : static_cast<int32_t>(std::min<double>(n_probs, n_vocab_));

    const std::string grammar = GetString(s, "grammar", "");
    if (!grammar.empty()) {
        const bool lazy = GetBool(s, "grammarLazy", false);
        std::vector<std::string> patterns = GetStrings(env, s, "grammarTriggerPatterns");
        std::vector<llama_token> tokens;
        Napi::Value tv = s.Get("grammarTriggerTokens");
        if (tv.IsArray()) {
            Napi::Array arr = tv.As<Napi::Array>();
            for (uint32_t i = 0; i < arr.Length(); i++) {
                Napi::Value e = arr.Get(i);
                int32_t t = e.IsNumber() ? e.As<Napi::Number>().Int32Value() : -1;
                if (t < 0 || t >= n_vocab_) ThrowJs(env, "INVALID_ARGUMENT", "grammarTriggerTokens[" + std::to_string(i) + "]: not a token of the vocabulary");
                tokens.push_back(t);
            }
        } else if (!tv.IsUndefined() && !tv.IsNull()) {
            ThrowJs(env, "INVALID_ARGUMENT", "grammarTriggerTokens: must be an array of token ids");
        }
        try {
            grammar_ = InitGrammarSampler(model->vocab(), grammar, lazy, patterns, tokens);
            // As llama-server does for template and schema grammars: the generation prompt is already in
            // the prompt, so the grammar is advanced past it.
            const std::string prefill = GetString(s, "grammarPrefill", "");
            if (!prefill.empty() && !lazy) {
                grammar_prefill_ = TokensSpelling(model->vocab(), prefill);
                for (llama_token t : grammar_prefill_) llama_sampler_accept(grammar_, t);
            }
        } catch (const NativeError & e) {
            Free();
            ThrowJs(env, e.code(), e.what());
        } catch (const std::exception & e) {
            Free();
            ThrowJs(env, "INVALID_ARGUMENT", std::string("grammarPrefill: the grammar does not accept it: ") + e.what());
        }
    }

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

AddonSampler::~AddonSampler() { Free(); }

void AddonSampler::Free() {
    if (chain_ != nullptr) llama_sampler_free(chain_);
    if (grammar_ != nullptr) llama_sampler_free(grammar_);
    chain_ = nullptr;
    grammar_ = nullptr;
}

// The grammar goes first, over the whole vocabulary, so the chain only ever chooses among tokens the
// grammar allows (common_sampler's grammar_first; its sample-then-check shortcut is only faster).
llama_token AddonSampler::Sample(llama_context * ctx, int32_t idx) {
    const float * logits = llama_get_logits_ith(ctx, idx);
    if (logits == nullptr) throw NativeError("DECODE_FAILED", "no logits for row " + std::to_string(idx));
    cur_.resize(static_cast<size_t>(n_vocab_));
    for (llama_token t = 0; t < n_vocab_; t++) cur_[t] = llama_token_data{t, logits[t], 0.0f};
    llama_token_data_array cur_p = {cur_.data(), cur_.size(), -1, false};
    try {
        if (grammar_ != nullptr) llama_sampler_apply(grammar_, &cur_p);
        llama_sampler_apply(chain_, &cur_p);
        if (cur_p.selected < 0 || static_cast<size_t>(cur_p.selected) >= cur_p.size) {
            throw NativeError("DECODE_FAILED", "the sampler chain selected no token");
        }
        const llama_token token = cur_p.data[cur_p.selected].id;
        if (grammar_ != nullptr) {
            // Nothing left that the grammar allows (its end, with end-of-generation banned by ignore_eos):
            // the output is complete.
            if (std::isinf(cur_p.data[cur_p.selected].logit) && cur_p.data[cur_p.selected].logit < 0 && eos_ != LLAMA_TOKEN_NULL) return eos_;
            llama_sampler_accept(grammar_, token);
        }
        llama_sampler_accept(chain_, token);
        return token;
    } catch (const NativeError &) {
        throw;
    } catch (const std::exception & e) {
        throw NativeError("GRAMMAR_FAILED", std::string("the grammar rejected the sampled token: ") + e.what());
    }
}

TokenLogprobs AddonSampler::Logprobs(llama_context * ctx, int32_t idx, llama_token token) const {
    TokenLogprobs out;
    out.token = token;
    const float * logits = llama_get_logits_ith(ctx, idx);
    if (logits == nullptr) return out;
    float max = -INFINITY;
    for (int32_t t = 0; t < n_vocab_; t++) max = std::max(max, logits[t]);
    double sum = 0;
    for (int32_t t = 0; t < n_vocab_; t++) sum += std::exp(static_cast<double>(logits[t] - max));
    const float log_z = max + static_cast<float>(std::log(sum));
    out.logprob = logits[token] - log_z;
    if (n_probs_ > 0) {
        std::vector<llama_token> ids(static_cast<size_t>(n_vocab_));
        for (int32_t t = 0; t < n_vocab_; t++) ids[t] = t;
        const auto n = static_cast<std::ptrdiff_t>(n_probs_);
        std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](llama_token a, llama_token b) {
            return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
        });
        for (std::ptrdiff_t i = 0; i < n; i++) out.top.emplace_back(ids[i], logits[ids[i]] - log_z);
    }
    return out;
}

// accept(tokens: Int32Array): feed tokens (the prompt) into the penalty history. The grammar never
// sees them: it constrains what is generated.
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

// replay(tokens: Int32Array): brings a new sampler to the state of one that generated these tokens
// (a request resumed on a new engine): each is accepted as Sample() accepts it (grammar, penalties),
// and the chain is applied once to a one-token array, which draws the random choice's number exactly
// as often as Sample() did, so seeded sampling continues from the same RNG state.
Napi::Value AddonSampler::Replay(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (chain_ == nullptr) ThrowJs(env, "DISPOSED", "the sampler was disposed");
    if (in_use.load()) ThrowJs(env, "INVALID_STATE", "the sampler is in use by a decode");
    if (info.Length() < 1 || !info[0].IsTypedArray()) ThrowJs(env, "INVALID_ARGUMENT", "replay(tokens): tokens must be an Int32Array");
    Napi::Int32Array arr = info[0].As<Napi::Int32Array>();
    for (size_t i = 0; i < arr.ElementLength(); i++) {
        const llama_token t = arr[i];
        if (t < 0 || t >= n_vocab_) ThrowJs(env, "INVALID_ARGUMENT", "replay: token " + std::to_string(t) + " is outside the vocabulary");
        llama_token_data one = {t, 0.0f, 0.0f};
        llama_token_data_array cur_p = {&one, 1, -1, false};
        try {
            llama_sampler_apply(chain_, &cur_p);
            if (grammar_ != nullptr) llama_sampler_accept(grammar_, t);
            llama_sampler_accept(chain_, t);
        } catch (const std::exception & e) {
            ThrowJs(env, "GRAMMAR_FAILED", "replay: the grammar rejects token " + std::to_string(i) + " of the resumed output: " + e.what());
        }
    }
    return env.Undefined();
}

Napi::Value AddonSampler::Reset(const Napi::CallbackInfo & info) {
    if (chain_ != nullptr && !in_use.load()) {
        llama_sampler_reset(chain_);
        if (grammar_ != nullptr) {
            llama_sampler_reset(grammar_);
            try {
                for (llama_token t : grammar_prefill_) llama_sampler_accept(grammar_, t);
            } catch (const std::exception & e) {
                ThrowJs(info.Env(), "INTERNAL", std::string("reset: the grammar no longer accepts its prefill: ") + e.what());
            }
        }
    }
    return info.Env().Undefined();
}

Napi::Value AddonSampler::Dispose(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (in_use.load()) ThrowJs(env, "INVALID_STATE", "the sampler is in use by a decode");
    Free();
    return env.Undefined();
}

void AddonSampler::Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "AddonSampler",
                                    {
                                        InstanceMethod("accept", &AddonSampler::Accept),
                                        InstanceMethod("replay", &AddonSampler::Replay),
                                        InstanceMethod("reset", &AddonSampler::Reset),
                                        InstanceMethod("dispose", &AddonSampler::Dispose),
                                    });
    constructor = Napi::Persistent(fn);
    constructor.SuppressDestruct();
    exports.Set("AddonSampler", fn);
}

void InitSampler(Napi::Env env, Napi::Object exports) { AddonSampler::Init(env, exports); }

}  // namespace hearth
