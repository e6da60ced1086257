// AddonContext: a llama context (KV cache, compute buffers) over a loaded model. One native thread at a
// time decodes on it; the busy flag refuses overlapping calls instead of corrupting the context.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <thread>

#include "common.h"
#include "llama-ext.h"
#include "model.h"
#include "sampler.h"

namespace hearth {

class AddonContext : public Napi::ObjectWrap<AddonContext> {
  public:
    static Napi::FunctionReference constructor;
    static void Init(Napi::Env env, Napi::Object exports);

    explicit AddonContext(const Napi::CallbackInfo & info);
    ~AddonContext() override { Free(); }

  private:
    friend class InitContextWorker;
    friend class DecodeWorker;
    friend class EmbedWorker;

    Napi::Value InitAsync(const Napi::CallbackInfo & info);
    Napi::Value Info(const Napi::CallbackInfo & info);
    Napi::Value Decode(const Napi::CallbackInfo & info);
    Napi::Value Embed(const Napi::CallbackInfo & info);
    Napi::Value GetLogits(const Napi::CallbackInfo & info);
    Napi::Value LastLogprobs(const Napi::CallbackInfo & info);
    Napi::Value SeqRemove(const Napi::CallbackInfo & info);
    Napi::Value MemoryClear(const Napi::CallbackInfo & info);
    Napi::Value SeqPosRange(const Napi::CallbackInfo & info);
    Napi::Value MemoryBreakdown(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);

    void RequireReady(Napi::Env env) const;
    void Free();

    Napi::ObjectReference model_ref_;
    AddonModel * model_ = nullptr;
    llama_context_params params_{};
    llama_context * ctx_ = nullptr;
    bool embeddings_ = false;  // pooled outputs (embed), not sampled tokens (decode)
    std::atomic<bool> busy_{false};
    int32_t n_outputs_ = 0;  // rows of logits the last decode produced
    std::vector<int32_t> output_rows_;  // batch index -> logits flag of the last decode
    std::vector<std::optional<TokenLogprobs>> last_logprobs_;  // per sample of the last decode
};

Napi::FunctionReference AddonContext::constructor;

// new AddonContext(model, {nCtx, nBatch, nUbatch, nSeqMax, typeK, typeV, flashAttn, nThreads,
//                          nThreadsBatch, kvUnified, offloadKqv, embeddings})
AddonContext::AddonContext(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonContext>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(AddonModel::constructor.Value())) {
        ThrowJs(env, "INVALID_ARGUMENT", "AddonContext(model, options): model must be an AddonModel");
    }
    model_ = AddonModel::Unwrap(info[0].As<Napi::Object>());
    if (model_->model() == nullptr) ThrowJs(env, "NOT_LOADED", "the model is not loaded");
    model_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
    Napi::Object o = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);

    params_ = llama_context_default_params();
    const int hw = std::max(1u, std::thread::hardware_concurrency());
    params_.n_ctx = static_cast<uint32_t>(GetNumber(o, "nCtx", 4096));
    params_.n_batch = static_cast<uint32_t>(GetNumber(o, "nBatch", 512));
    params_.n_ubatch = static_cast<uint32_t>(GetNumber(o, "nUbatch", std::min<double>(params_.n_batch, 512)));
    params_.n_seq_max = static_cast<uint32_t>(GetNumber(o, "nSeqMax", 1));
    params_.n_threads = static_cast<int32_t>(GetNumber(o, "nThreads", hw));
    params_.n_threads_batch = static_cast<int32_t>(GetNumber(o, "nThreadsBatch", params_.n_threads));
    params_.kv_unified = GetBool(o, "kvUnified", false);
    // Sliding-window layers keep only their window (plus a micro-batch) of KV, as llama-server does by
    // default; the full-size cache would make them cost as much as global layers.
    params_.swa_full = GetBool(o, "swaFull", false);
    params_.offload_kqv = GetBool(o, "offloadKqv", true);
    params_.no_perf = true;
    // An embeddings context pools each sequence's outputs with the model's own pooling type
    // (<arch>.pooling_type; llama-server --embeddings / --reranking leave it to the model too).
    embeddings_ = GetBool(o, "embeddings", false);
    params_.embeddings = embeddings_;
    params_.type_k = ParseCacheType(env, GetString(o, "typeK", "f16"), "typeK");
    params_.type_v = ParseCacheType(env, GetString(o, "typeV", "f16"), "typeV");
    std::string fa = GetString(o, "flashAttn", "auto");
    if (fa == "auto") params_.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
    else if (fa == "on") params_.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    else if (fa == "off") params_.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    else ThrowJs(env, "INVALID_ARGUMENT", "flashAttn: '" + fa + "' is not one of auto, on, off");

    if (params_.n_seq_max < 1 || params_.n_seq_max > llama_max_parallel_sequences()) {
        ThrowJs(env, "INVALID_ARGUMENT", "nSeqMax: must be between 1 and " + std::to_string(llama_max_parallel_sequences()));
    }
    if (params_.n_batch < 1 || params_.n_ubatch < 1 || params_.n_ubatch > params_.n_batch) {
        ThrowJs(env, "INVALID_ARGUMENT", "nBatch and nUbatch must be >= 1 with nUbatch <= nBatch");
    }
    if (params_.n_threads < 1 || params_.n_threads_batch < 1) ThrowJs(env, "INVALID_ARGUMENT", "nThreads must be >= 1");
    // llama.cpp keeps room for one output per sequence within a batch's outputs (n_outputs_max, n_batch
    // by default) and aborts the process at the first decode otherwise.
    if (params_.n_seq_max > params_.n_batch || (params_.n_ctx > 0 && params_.n_seq_max > params_.n_ctx)) {
        ThrowJs(env, "INVALID_ARGUMENT", "nSeqMax (" + std::to_string(params_.n_seq_max) + ") must not exceed nBatch (" + std::to_string(params_.n_batch) + ") or nCtx: llama.cpp reserves one output per sequence in a batch");
    }
    if (params_.type_v != GGML_TYPE_F16 && params_.type_v != GGML_TYPE_F32 && params_.type_v != GGML_TYPE_BF16 &&
        params_.flash_attn_type == LLAMA_FLASH_ATTN_TYPE_DISABLED) {
        ThrowJs(env, "INVALID_ARGUMENT", "typeV: a quantized V cache needs flash attention (flashAttn 'on' or 'auto')");
    }
    model_->live_contexts++;
}

void AddonContext::Free() {
    if (ctx_ != nullptr) {
        llama_free(ctx_);
        ctx_ = nullptr;
    }
    if (model_ != nullptr) {
        model_->live_contexts--;
        model_ = nullptr;
        model_ref_.Reset();
    }
}

void AddonContext::RequireReady(Napi::Env env) const {
    if (ctx_ == nullptr) ThrowJs(env, "NOT_READY", "the context is not initialised (or was disposed)");
    if (busy_.load()) ThrowJs(env, "INVALID_STATE", "a decode is already running on this context");
}

class InitContextWorker : public PromiseWorker {
  public:
    InitContextWorker(Napi::Env env, AddonContext * ctx) : PromiseWorker(env, "hearth.initContext"), ctx_(ctx) {
        ref_ = Napi::Persistent(ctx->Value());
    }

  protected:
    void Run() override {
        LoadCapture capture;
        SetLoadCapture(&capture);
        llama_context * c = llama_init_from_model(ctx_->model_->model(), ctx_->params_);
        SetLoadCapture(nullptr);
        if (c == nullptr) {
            std::string reason;
            for (const auto & e : capture.errors) reason += (reason.empty() ? "" : "; ") + e;
            throw NativeError("CONTEXT_FAILED", "failed to create the llama context" + (reason.empty() ? std::string() : ": " + reason));
        }
        ctx_->ctx_ = c;
    }
    void OnOK() override {
        ctx_->busy_ = false;
        PromiseWorker::OnOK();
    }
    void OnError(const Napi::Error & e) override {
        ctx_->busy_ = false;
        PromiseWorker::OnError(e);
    }

  private:
    AddonContext * ctx_;
    Napi::ObjectReference ref_;
};

Napi::Value AddonContext::InitAsync(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (ctx_ != nullptr || busy_.load()) ThrowJs(env, "INVALID_STATE", "init() was already called on this context");
    if (model_ == nullptr) ThrowJs(env, "DISPOSED", "the context was disposed");
    busy_ = true;
    auto * worker = new InitContextWorker(env, this);
    worker->Queue();
    return worker->Promise();
}

static const char * PoolingTypeName(enum llama_pooling_type t) {
    switch (t) {
        case LLAMA_POOLING_TYPE_NONE: return "none";
        case LLAMA_POOLING_TYPE_MEAN: return "mean";
        case LLAMA_POOLING_TYPE_CLS: return "cls";
        case LLAMA_POOLING_TYPE_LAST: return "last";
        case LLAMA_POOLING_TYPE_RANK: return "rank";
        default: return "unspecified";
    }
}

Napi::Value AddonContext::Info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (ctx_ == nullptr) ThrowJs(env, "NOT_READY", "the context is not initialised (or was disposed)");
    Napi::Object o = Napi::Object::New(env);
    o.Set("nCtx", llama_n_ctx(ctx_));
    o.Set("nCtxSeq", llama_n_ctx_seq(ctx_));
    o.Set("nBatch", llama_n_batch(ctx_));
    o.Set("nUbatch", llama_n_ubatch(ctx_));
    o.Set("nSeqMax", llama_n_seq_max(ctx_));
    o.Set("nVocab", llama_vocab_n_tokens(model_->vocab()));
    // Sliding-window layers keep only this many positions (0: the whole context is kept).
    o.Set("nSwa", params_.swa_full ? 0 : llama_model_n_swa(model_->model()));
    o.Set("embeddings", embeddings_);
    o.Set("poolingType", PoolingTypeName(llama_pooling_type(ctx_)));
    return o;
}

class DecodeWorker : public PromiseWorker {
  public:
    DecodeWorker(Napi::Env env, AddonContext * ctx) : PromiseWorker(env, "hearth.decode"), ctx_(ctx) {
        ref_ = Napi::Persistent(ctx->Value());
    }
    ~DecodeWorker() override {
        llama_batch_free(batch_);
        for (auto * s : samplers_) s->in_use = false;
    }

    llama_batch batch_{};
    std::vector<int32_t> sample_rows_;
    std::vector<AddonSampler *> samplers_;
    std::vector<Napi::ObjectReference> sampler_refs_;
    // Speculative verification: sample i's drafted tokens follow its row (rows row+1..row+k). Empty:
    // one token per sample, as a plain decode.
    bool verify_ = false;
    std::vector<int32_t> draft_lens_;
    std::vector<llama_token> draft_tokens_;

  protected:
    void Run() override {
        int32_t rc = llama_decode(ctx_->ctx_, batch_);
        if (rc != 0) {
            switch (rc) {
                case 1: throw NativeError("KV_CACHE_FULL", "no room in the KV cache for this batch; free sequences or use a larger context");
                case 2: throw NativeError("ABORTED", "decode aborted");
                case -1: throw NativeError("INVALID_BATCH", "llama.cpp rejected the batch (positions or sequence ids out of order)");
                default: throw NativeError("DECODE_FAILED", "llama_decode failed with code " + std::to_string(rc));
            }
        }
        sampled_.clear();
        logprobs_.clear();
        counts_.assign(sample_rows_.size(), 0);
        size_t draft_at = 0;
        for (size_t i = 0; i < sample_rows_.size(); i++) {
            // A sample with a draft is verified as llama.cpp's common_sampler_sample_and_accept_n does:
            // the target samples each drafted position with the request's own sampler, in order, and
            // stops at the first sample that differs from the draft (that sample is kept). Every emitted
            // token is the target's own sample given the ones before it, so the output distribution is the
            // target's, and the sampler accepts exactly the emitted tokens (grammar, penalties, RNG).
            const int32_t k = verify_ ? draft_lens_[i] : 0;
            for (int32_t j = 0; j <= k; j++) {
                const int32_t row = sample_rows_[i] + j;
                const llama_token t = samplers_[i]->Sample(ctx_->ctx_, row);
                sampled_.push_back(t);
                // From the raw logits, as OpenAI's logprobs are: what the model thought, not the sampler.
                logprobs_.push_back(samplers_[i]->wants_logprobs() ? std::optional<TokenLogprobs>(samplers_[i]->Logprobs(ctx_->ctx_, row, t)) : std::nullopt);
                counts_[i]++;
                if (j == k || t != draft_tokens_[draft_at + j]) break;
            }
            draft_at += k;
        }
    }
    Napi::Value Result(Napi::Env env) override {
        ctx_->busy_ = false;
        ctx_->last_logprobs_ = std::move(logprobs_);
        if (!verify_) {
            Napi::Int32Array out = Napi::Int32Array::New(env, sampled_.size());
            std::copy(sampled_.begin(), sampled_.end(), out.Data());
            return out;
        }
        // One array of emitted tokens per sample.
        Napi::Array out = Napi::Array::New(env, counts_.size());
        size_t at = 0;
        for (size_t i = 0; i < counts_.size(); i++) {
            Napi::Int32Array tokens = Napi::Int32Array::New(env, static_cast<size_t>(counts_[i]));
            std::copy(sampled_.begin() + at, sampled_.begin() + at + counts_[i], tokens.Data());
            at += counts_[i];
            out.Set(static_cast<uint32_t>(i), tokens);
        }
        return out;
    }
    void OnError(const Napi::Error & e) override {
        ctx_->busy_ = false;
        ctx_->last_logprobs_.clear();
        PromiseWorker::OnError(e);
    }

  private:
    AddonContext * ctx_;
    Napi::ObjectReference ref_;
    std::vector<llama_token> sampled_;
    std::vector<int32_t> counts_;
    std::vector<std::optional<TokenLogprobs>> logprobs_;
};

template <typename T>
static T TypedArg(Napi::Env env, const Napi::CallbackInfo & info, size_t i, napi_typedarray_type type, const char * what) {
    if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != type) {
        ThrowJs(env, "INVALID_ARGUMENT", std::string("decode: ") + what);
    }
    return info[i].As<T>();
}

// decode(tokens: Int32Array, positions: Int32Array, seqIds: Int32Array, logits: Uint8Array,
//        sampleRows: Int32Array, samplers: AddonSampler[], draftLens?: Int32Array)
//   : Promise<Int32Array | Int32Array[]>
// Decodes one batch and, on the same native thread, samples row sampleRows[i] with samplers[i]: one
// token per sample. With draftLens, sample i verifies the draftLens[i] drafted tokens in the rows after its
// own (consecutive positions of its sequence) and the result is, per sample, the tokens it emitted: the
// accepted draft tokens and the target's own next one.
Napi::Value AddonContext::Decode(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireReady(env);
    if (embeddings_) ThrowJs(env, "INVALID_STATE", "decode: this context computes embeddings; use embed()");
    auto tokens = TypedArg<Napi::Int32Array>(env, info, 0, napi_int32_array, "tokens must be an Int32Array");
    auto pos = TypedArg<Napi::Int32Array>(env, info, 1, napi_int32_array, "positions must be an Int32Array");
    auto seq = TypedArg<Napi::Int32Array>(env, info, 2, napi_int32_array, "seqIds must be an Int32Array");
    auto logits = TypedArg<Napi::Uint8Array>(env, info, 3, napi_uint8_array, "logits must be a Uint8Array");
    auto rows = TypedArg<Napi::Int32Array>(env, info, 4, napi_int32_array, "sampleRows must be an Int32Array");
    if (info.Length() < 6 || !info[5].IsArray()) ThrowJs(env, "INVALID_ARGUMENT", "decode: samplers must be an array");
    Napi::Array samplers = info[5].As<Napi::Array>();

    const size_t n = tokens.ElementLength();
    if (n == 0) ThrowJs(env, "INVALID_ARGUMENT", "decode: the batch is empty");
    if (pos.ElementLength() != n || seq.ElementLength() != n || logits.ElementLength() != n) {
        ThrowJs(env, "INVALID_ARGUMENT", "decode: tokens, positions, seqIds and logits must have the same length");
    }
    if (n > llama_n_batch(ctx_)) {
        ThrowJs(env, "INVALID_ARGUMENT", "decode: " + std::to_string(n) + " tokens exceed nBatch " + std::to_string(llama_n_batch(ctx_)) + "; split the batch");
    }
    if (rows.ElementLength() != samplers.Length()) ThrowJs(env, "INVALID_ARGUMENT", "decode: sampleRows and samplers must have the same length");
    const int32_t n_vocab = llama_vocab_n_tokens(model_->vocab());
    const int32_t n_seq_max = static_cast<int32_t>(llama_n_seq_max(ctx_));
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) ThrowJs(env, "INVALID_ARGUMENT", "decode: tokens[" + std::to_string(i) + "] is outside the vocabulary");
        if (pos[i] < 0) ThrowJs(env, "INVALID_ARGUMENT", "decode: positions[" + std::to_string(i) + "] is negative");
        if (seq[i] < 0 || seq[i] >= n_seq_max) ThrowJs(env, "INVALID_ARGUMENT", "decode: seqIds[" + std::to_string(i) + "] must be in 0.." + std::to_string(n_seq_max - 1));
    }

    auto * worker = new DecodeWorker(env, this);
    for (uint32_t i = 0; i < samplers.Length(); i++) {
        Napi::Value v = samplers.Get(i);
        int32_t row = rows[i];
        if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(AddonSampler::constructor.Value())) {
            delete worker;
            ThrowJs(env, "INVALID_ARGUMENT", "decode: samplers[" + std::to_string(i) + "] is not an AddonSampler");
        }
        AddonSampler * s = AddonSampler::Unwrap(v.As<Napi::Object>());
        if (row < 0 || static_cast<size_t>(row) >= n || logits[row] == 0 || !s->live() || s->in_use.load()) {
            delete worker;
            ThrowJs(env, "INVALID_ARGUMENT", "decode: sample " + std::to_string(i) + " needs a row with logits and a live sampler not used twice");
        }
        s->in_use = true;
        worker->samplers_.push_back(s);
        worker->sampler_refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
        worker->sample_rows_.push_back(row);
    }
    if (info.Length() > 6 && !info[6].IsUndefined()) {
        auto lens = TypedArg<Napi::Int32Array>(env, info, 6, napi_int32_array, "draftLens must be an Int32Array");
        if (lens.ElementLength() != rows.ElementLength()) {
            delete worker;
            ThrowJs(env, "INVALID_ARGUMENT", "decode: draftLens must have one entry per sample");
        }
        for (size_t i = 0; i < lens.ElementLength(); i++) {
            const int32_t k = lens[i];
            const int32_t row = rows[i];
            bool ok = k >= 0 && static_cast<size_t>(row) + static_cast<size_t>(k) < n;
            for (int32_t j = 1; ok && j <= k; j++) {
                const size_t r = static_cast<size_t>(row + j);
                ok = logits[r] != 0 && seq[r] == seq[static_cast<size_t>(row)] && pos[r] == pos[static_cast<size_t>(row)] + j;
            }
            if (!ok) {
                delete worker;
                ThrowJs(env, "INVALID_ARGUMENT", "decode: sample " + std::to_string(i) + "'s draft must follow its row: consecutive positions of its sequence, with logits");
            }
            // The drafted tokens are the batch's own tokens in those rows.
            for (int32_t j = 1; j <= k; j++) worker->draft_tokens_.push_back(tokens[static_cast<size_t>(row + j)]);
        }
        worker->verify_ = true;
        worker->draft_lens_.assign(lens.Data(), lens.Data() + lens.ElementLength());
    }
    worker->batch_ = llama_batch_init(static_cast<int32_t>(n), 0, 1);
    for (size_t i = 0; i < n; i++) {
        worker->batch_.token[i] = tokens[i];
        worker->batch_.pos[i] = pos[i];
        worker->batch_.n_seq_id[i] = 1;
        worker->batch_.seq_id[i][0] = seq[i];
        worker->batch_.logits[i] = logits[i] != 0;
    }
    worker->batch_.n_tokens = static_cast<int32_t>(n);
    output_rows_.assign(logits.Data(), logits.Data() + n);
    last_logprobs_.clear();
    busy_ = true;
    worker->Queue();
    return worker->Promise();
}

// Pooled outputs: one decode of a batch whose every row is an output (llama.cpp pools all of a
// sequence's outputs), then each asked-for sequence's pooled vector, as llama-server's send_embedding
// and send_rerank read it (llama_get_embeddings_seq): n_embd_out floats, or for rank pooling the
// n_cls_out scores. Vectors are normalised with common_embd_normalize (-1: none, 2: L2), as llama-server.
class EmbedWorker : public PromiseWorker {
  public:
    EmbedWorker(Napi::Env env, AddonContext * ctx) : PromiseWorker(env, "hearth.embed"), ctx_(ctx) {
        ref_ = Napi::Persistent(ctx->Value());
    }
    ~EmbedWorker() override { llama_batch_free(batch_); }

    llama_batch batch_{};
    std::vector<int32_t> out_seqs_;
    int32_t normalize_ = -1;

  protected:
    void Run() override {
        int32_t rc = llama_decode(ctx_->ctx_, batch_);
        if (rc != 0) {
            switch (rc) {
                case 1: throw NativeError("KV_CACHE_FULL", "no room in the KV cache for this batch; free sequences or use a larger context");
                case 2: throw NativeError("ABORTED", "decode aborted");
                case -1: throw NativeError("INVALID_BATCH", "llama.cpp rejected the batch (positions or sequence ids out of order)");
                default: throw NativeError("DECODE_FAILED", "llama_decode failed with code " + std::to_string(rc));
            }
        }
        const llama_model * model = ctx_->model_->model();
        const bool rank = llama_pooling_type(ctx_->ctx_) == LLAMA_POOLING_TYPE_RANK;
        const int32_t n = rank ? static_cast<int32_t>(llama_model_n_cls_out(model)) : llama_model_n_embd_out(model);
        for (int32_t seq : out_seqs_) {
            const float * e = llama_get_embeddings_seq(ctx_->ctx_, seq);
            if (e == nullptr) throw NativeError("EMBED_FAILED", "llama.cpp gave no pooled output for sequence " + std::to_string(seq));
            std::vector<float> v(static_cast<size_t>(n));
            common_embd_normalize(e, v.data(), n, normalize_);
            out_.push_back(std::move(v));
        }
    }
    Napi::Value Result(Napi::Env env) override {
        ctx_->busy_ = false;
        Napi::Array out = Napi::Array::New(env, out_.size());
        for (size_t i = 0; i < out_.size(); i++) {
            Napi::Float32Array v = Napi::Float32Array::New(env, out_[i].size());
            std::copy(out_[i].begin(), out_[i].end(), v.Data());
            out.Set(static_cast<uint32_t>(i), v);
        }
        return out;
    }
    void OnError(const Napi::Error & e) override {
        ctx_->busy_ = false;
        PromiseWorker::OnError(e);
    }

  private:
    AddonContext * ctx_;
    Napi::ObjectReference ref_;
    std::vector<std::vector<float>> out_;
};

// embed(tokens: Int32Array, positions: Int32Array, seqIds: Int32Array, outSeqIds: Int32Array,
//       normalize: number): Promise<Float32Array[]>
// Decodes the batch on an embeddings context and returns the pooled output of each of outSeqIds, in
// that order. The caller frees a sequence's cells before it starts another input on it.
Napi::Value AddonContext::Embed(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireReady(env);
    if (!embeddings_) ThrowJs(env, "INVALID_STATE", "embed: this context generates tokens; create it with embeddings: true");
    if (llama_pooling_type(ctx_) == LLAMA_POOLING_TYPE_NONE) {
        ThrowJs(env, "UNSUPPORTED", "embed: the model has no pooling type (<arch>.pooling_type), so it gives no vector per input");
    }
    auto arg = [&](size_t i, const char * what) {
        if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
            ThrowJs(env, "INVALID_ARGUMENT", std::string("embed: ") + what + " must be an Int32Array");
        }
        return info[i].As<Napi::Int32Array>();
    };
    auto tokens = arg(0, "tokens");
    auto pos = arg(1, "positions");
    auto seq = arg(2, "seqIds");
    auto outs = arg(3, "outSeqIds");
    const int32_t normalize = info.Length() > 4 && info[4].IsNumber() ? info[4].As<Napi::Number>().Int32Value() : -1;
    const size_t n = tokens.ElementLength();
    if (n == 0) ThrowJs(env, "INVALID_ARGUMENT", "embed: the batch is empty");
    if (pos.ElementLength() != n || seq.ElementLength() != n) ThrowJs(env, "INVALID_ARGUMENT", "embed: tokens, positions and seqIds must have the same length");
    if (n > llama_n_batch(ctx_)) {
        ThrowJs(env, "INVALID_ARGUMENT", "embed: " + std::to_string(n) + " tokens exceed nBatch " + std::to_string(llama_n_batch(ctx_)) + "; split the batch");
    }
    const int32_t n_vocab = llama_vocab_n_tokens(model_->vocab());
    const int32_t n_seq_max = static_cast<int32_t>(llama_n_seq_max(ctx_));
    std::vector<bool> present(static_cast<size_t>(n_seq_max), false);
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) ThrowJs(env, "INVALID_ARGUMENT", "embed: tokens[" + std::to_string(i) + "] is outside the vocabulary");
        if (pos[i] < 0) ThrowJs(env, "INVALID_ARGUMENT", "embed: positions[" + std::to_string(i) + "] is negative");
        if (seq[i] < 0 || seq[i] >= n_seq_max) ThrowJs(env, "INVALID_ARGUMENT", "embed: seqIds[" + std::to_string(i) + "] must be in 0.." + std::to_string(n_seq_max - 1));
        present[static_cast<size_t>(seq[i])] = true;
    }
    for (size_t i = 0; i < outs.ElementLength(); i++) {
        if (outs[i] < 0 || outs[i] >= n_seq_max || !present[static_cast<size_t>(outs[i])]) {
            ThrowJs(env, "INVALID_ARGUMENT", "embed: outSeqIds[" + std::to_string(i) + "] is not a sequence of this batch");
        }
    }
    auto * worker = new EmbedWorker(env, this);
    worker->batch_ = llama_batch_init(static_cast<int32_t>(n), 0, 1);
    for (size_t i = 0; i < n; i++) {
        worker->batch_.token[i] = tokens[i];
        worker->batch_.pos[i] = pos[i];
        worker->batch_.n_seq_id[i] = 1;
        worker->batch_.seq_id[i][0] = seq[i];
        // Pooling reads every output of a sequence: llama.cpp refuses a pooled batch without all of them.
        worker->batch_.logits[i] = true;
    }
    worker->batch_.n_tokens = static_cast<int32_t>(n);
    worker->out_seqs_.assign(outs.Data(), outs.Data() + outs.ElementLength());
    worker->normalize_ = normalize;
    output_rows_.clear();
    last_logprobs_.clear();
    busy_ = true;
    worker->Queue();
    return worker->Promise();
}

// getLogits(row): Float32Array copy of the last decode's logits for batch row `row`.
Napi::Value AddonContext::GetLogits(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireReady(env);
    int32_t row = info.Length() > 0 ? info[0].ToNumber().Int32Value() : -1;
    if (row < 0 || static_cast<size_t>(row) >= output_rows_.size() || output_rows_[row] == 0) {
        ThrowJs(env, "INVALID_ARGUMENT", "getLogits: row " + std::to_string(row) + " had no logits in the last decode");
    }
    const float * l = llama_get_logits_ith(ctx_, row);
    if (l == nullptr) ThrowJs(env, "INVALID_ARGUMENT", "getLogits: no logits for row " + std::to_string(row));
    const int32_t n_vocab = llama_vocab_n_tokens(model_->vocab());
    Napi::Float32Array out = Napi::Float32Array::New(env, static_cast<size_t>(n_vocab));
    std::memcpy(out.Data(), l, sizeof(float) * static_cast<size_t>(n_vocab));
    return out;
}

// lastLogprobs(i): {token, logprob, top: [{token, logprob}]} for sample i of the last decode, or null
// when its sampler did not ask for logprobs (nProbs < 0).
Napi::Value AddonContext::LastLogprobs(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireReady(env);
    int32_t i = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : -1;
    if (i < 0 || static_cast<size_t>(i) >= last_logprobs_.size()) {
        ThrowJs(env, "INVALID_ARGUMENT", "lastLogprobs: the last decode had no sample " + std::to_string(i));
    }
    const auto & lp = last_logprobs_[static_cast<size_t>(i)];
    if (!lp) return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("token", Napi::Number::New(env, lp->token));
    o.Set("logprob", Napi::Number::New(env, lp->logprob));
    Napi::Array top = Napi::Array::New(env, lp->top.size());
    for (size_t k = 0; k < lp->top.size(); k++) {
        Napi::Object e = Napi::Object::New(env);
        e.Set("token", Napi::Number::New(env, lp->top[k].first));
        e.Set("logprob", Napi::Number::New(env, lp->top[k].second));
        top.Set(static_cast<uint32_t>(k), e);
    }
    o.Set("top", top);
    return o;
}

// seqRemove(seqId, p0 = -1, p1 = -1): boolean. Frees a sequence's KV cells.
Napi::Value AddonContext::SeqRemove(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireReady(env);
    int32_t seq_id = info.Length() > 0 ? info[0].ToNumber().Int32Value() : -1;
    int32_t p0 = info.Length() > 1 ? info[1].ToNumber().Int32Value() : -1;
    int32_t p1 = info.Length() > 2 ? info[2].ToNumber().Int32Value() : -1;
    if (seq_id >= static_cast<int32_t>(llama_n_seq_max(ctx_))) ThrowJs(env, "INVALID_ARGUMENT", "seqRemove: no sequence " + std::to_string(seq_id));
    return Napi::Boolean::New(env, llama_memory_seq_rm(llama_get_memory(ctx_), seq_id, p0, p1));
}

// seqPosRange(seqId): [min, max] positions held for a sequence ([-1, -1] when empty). With a
// sliding-window cache, min says how much of an old prefix is still there.
Napi::Value AddonContext::SeqPosRange(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireReady(env);
    int32_t seq_id = info.Length() > 0 ? info[0].ToNumber().Int32Value() : -1;
    if (seq_id < 0 || seq_id >= static_cast<int32_t>(llama_n_seq_max(ctx_))) ThrowJs(env, "INVALID_ARGUMENT", "seqPosRange: no sequence " + std::to_string(seq_id));
    llama_memory_t mem = llama_get_memory(ctx_);
    Napi::Array out = Napi::Array::New(env, 2);
    out.Set(0u, Napi::Number::New(env, llama_memory_seq_pos_min(mem, seq_id)));
    out.Set(1u, Napi::Number::New(env, llama_memory_seq_pos_max(mem, seq_id)));
    return out;
}

Napi::Value AddonContext::MemoryClear(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireReady(env);
    llama_memory_clear(llama_get_memory(ctx_), true);
    return env.Undefined();
}

// memoryBreakdown(): [{buffer, device, modelBytes, contextBytes, computeBytes}] per buffer type
Napi::Value AddonContext::MemoryBreakdown(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireReady(env);
    llama_memory_breakdown mb = llama_get_memory_breakdown(ctx_);
    Napi::Array out = Napi::Array::New(env);
    uint32_t i = 0;
    for (const auto & [buft, data] : mb) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("buffer", ggml_backend_buft_name(buft));
        ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
        o.Set("device", dev ? Napi::Value(Napi::String::New(env, ggml_backend_dev_name(dev))) : env.Null());
        o.Set("modelBytes", Napi::Number::New(env, static_cast<double>(data.model)));
        o.Set("contextBytes", Napi::Number::New(env, static_cast<double>(data.context)));
        o.Set("computeBytes", Napi::Number::New(env, static_cast<double>(data.compute)));
        out.Set(i++, o);
    }
    return out;
}

Napi::Value AddonContext::Dispose(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (busy_.load()) ThrowJs(env, "INVALID_STATE", "cannot dispose a context while it decodes; await the decode first");
    Free();
    return env.Undefined();
}

void AddonContext::Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "AddonContext",
                                    {
                                        InstanceMethod("init", &AddonContext::InitAsync),
                                        InstanceMethod("info", &AddonContext::Info),
                                        InstanceMethod("decode", &AddonContext::Decode),
                                        InstanceMethod("embed", &AddonContext::Embed),
                                        InstanceMethod("getLogits", &AddonContext::GetLogits),
                                        InstanceMethod("lastLogprobs", &AddonContext::LastLogprobs),
                                        InstanceMethod("seqRemove", &AddonContext::SeqRemove),
                                        InstanceMethod("memoryClear", &AddonContext::MemoryClear),
                                        InstanceMethod("seqPosRange", &AddonContext::SeqPosRange),
                                        InstanceMethod("memoryBreakdown", &AddonContext::MemoryBreakdown),
                                        InstanceMethod("dispose", &AddonContext::Dispose),
                                    });
    constructor = Napi::Persistent(fn);
    constructor.SuppressDestruct();
    exports.Set("AddonContext", fn);
}

void InitContext(Napi::Env env, Napi::Object exports) { AddonContext::Init(env, exports); }

}  // namespace hearth
