// Test models: GGUFs of the llama, qwen3, qwen3moe and gemma3 architectures with deterministic random
// weights and a real tokenizer, and quantization through llama.cpp's own quantizer.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "addon.h"
#include "gguf.h"

namespace hearth {

namespace {

struct TestModelSpec {
    std::string out, vocab, name, chat_template, weight_type;
    std::string arch = "llama";
    uint32_t n_layer = 4, n_embd = 256, n_head = 4, n_head_kv = 2, n_ff = 512, n_ctx_train = 4096;
    // qwen3moe: experts per layer, experts used per token, and each layer's expert FFN width (layers
    // may differ, as llama.cpp allows an array).
    uint32_t n_expert = 0, n_expert_used = 0;
    std::vector<uint32_t> n_ff_exp;
    // gemma3: the sliding window and its pattern (every n-th layer is global).
    uint32_t n_swa = 0, swa_pattern = 6;
    uint64_t seed = 1;
    float stdev = 0.02f;
    // Speculative decoding pairs: the blocks after the first write this much of their usual output into
    // the residual stream (1: all of it), so a model with more blocks stays close to one with only the
    // first; and the output head's spread (< 0: stdev), larger so the top token is not a near tie.
    float residual_scale = 1.0f;
    float output_stdev = -1.0f;
    // Embedding and reranker models: <arch>.pooling_type (llama_pooling_type; -1: none written), the
    // rank head's labels (one cls.output row each, as a converted Qwen3-Reranker has "yes" and "no"),
    // tokenizer.chat_template.rerank, and an output head tied to the token embedding (no output.weight).
    int32_t pooling_type = -1;
    std::vector<std::string> classifier_labels;
    std::string rerank_template;
    bool tied_output = false;
    // -1: the tokenizer's own setting; 0/1: whether llama.cpp adds BOS (Qwen's tokenizers add none) and
    // EOS (a Qwen3-Embedding GGUF adds it: last-token pooling reads the end-of-text token).
    int32_t add_bos = -1, add_eos = -1;
};

// The layer a tensor belongs to ("blk.N."), or -1.
int LayerOf(const char * name) {
    if (std::strncmp(name, "blk.", 4) != 0) return -1;
    return std::atoi(name + 4);
}

// FNV-1a and splitmix64: portable, so the same seed gives the same bytes on every machine
// (std::hash and std::normal_distribution differ between standard libraries).
uint64_t Fnv1a(const char * s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= static_cast<uint8_t>(*s);
        h *= 1099511628211ull;
    }
    return h;
}

struct SplitMix64 {
    uint64_t state;
    uint64_t Next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    // Uniform on [-1, 1) from the top 24 bits: exact in float arithmetic.
    float NextSigned() { return static_cast<float>(static_cast<int32_t>(Next() >> 40) - (1 << 23)) / static_cast<float>(1 << 23); }
};

void FillTensor(ggml_tensor * tensor, const TestModelSpec & spec) {
    const int64_t n = ggml_nelements(tensor);
    std::vector<float> values(static_cast<size_t>(n));
    if (std::strstr(tensor->name, "_norm") != nullptr) {
        std::fill(values.begin(), values.end(), 1.0f);  // RMS norm weights: identity
    } else {
        SplitMix64 rng{spec.seed ^ Fnv1a(tensor->name)};
        float stdev = spec.stdev;
        if (std::strcmp(tensor->name, "output.weight") == 0 && spec.output_stdev >= 0.0f) stdev = spec.output_stdev;
        const bool writes_residual = std::strstr(tensor->name, ".attn_output.") != nullptr || std::strstr(tensor->name, ".ffn_down") != nullptr;
        if (writes_residual && LayerOf(tensor->name) >= 1) stdev *= spec.residual_scale;
        const float scale = stdev * 1.7320508f;  // uniform on [-a, a] has stdev a / sqrt(3)
        for (auto & v : values) v = rng.NextSigned() * scale;
    }
    if (tensor->type == GGML_TYPE_F16) {
        ggml_fp32_to_fp16_row(values.data(), static_cast<ggml_fp16_t *>(tensor->data), n);
    } else {
        std::memcpy(tensor->data, values.data(), ggml_nbytes(tensor));
    }
}

// Writes the GGUF directly: exactly the tensors of a plain llama model, nothing optional. (Building it
// through llama_model_init_from_user would also create and fill every optional tensor the loader knows:
// biases, rope factors, scales.)
class CreateTestModelWorker : public PromiseWorker {
  public:
    CreateTestModelWorker(Napi::Env env, TestModelSpec spec) : PromiseWorker(env, "hearth.createTestModel"), spec_(std::move(spec)) {}

  protected:
    void Run() override {
        gguf_context * vocab = gguf_init_from_file(spec_.vocab.c_str(), {/*no_alloc =*/true, /*ctx =*/nullptr});
        if (vocab == nullptr) throw NativeError("MODEL_INVALID", "cannot read the tokenizer GGUF " + spec_.vocab);
        const int64_t tokens_key = gguf_find_key(vocab, "tokenizer.ggml.tokens");
        const int64_t n_vocab = tokens_key < 0 ? 0 : static_cast<int64_t>(gguf_get_arr_n(vocab, tokens_key));
        if (n_vocab <= 0) {
            gguf_free(vocab);
            throw NativeError("MODEL_INVALID", spec_.vocab + " has no tokenizer.ggml.tokens");
        }
        gguf_context * g = gguf_init_empty();
        gguf_set_kv(g, vocab);  // general.* and tokenizer.* of the real llama SPM vocabulary
        gguf_free(vocab);
        if (spec_.add_bos >= 0) gguf_set_val_bool(g, "tokenizer.ggml.add_bos_token", spec_.add_bos == 1);
        if (spec_.add_eos >= 0) gguf_set_val_bool(g, "tokenizer.ggml.add_eos_token", spec_.add_eos == 1);

        const ggml_type wtype = spec_.weight_type == "f16" ? GGML_TYPE_F16 : GGML_TYPE_F32;
        const std::string & a = spec_.arch;
        const bool qk_norm = a == "qwen3" || a == "qwen3moe" || a == "gemma3";
        const bool moe = a == "qwen3moe";
        const bool gemma = a == "gemma3";
        const int64_t E = spec_.n_embd, F = spec_.n_ff, V = n_vocab;
        const int64_t head_dim = E / spec_.n_head, KV = head_dim * spec_.n_head_kv;
        auto key = [&](const char * k) { return a + "." + k; };
        gguf_set_val_str(g, "general.architecture", a.c_str());
        gguf_set_val_str(g, "general.name", spec_.name.c_str());
        gguf_set_val_u32(g, "general.file_type", wtype == GGML_TYPE_F16 ? 1 : 0);  // LLAMA_FTYPE_MOSTLY_F16 / ALL_F32
        gguf_set_val_u32(g, key("vocab_size").c_str(), static_cast<uint32_t>(V));
        gguf_set_val_u32(g, key("context_length").c_str(), spec_.n_ctx_train);
        gguf_set_val_u32(g, key("embedding_length").c_str(), spec_.n_embd);
        gguf_set_val_u32(g, key("block_count").c_str(), spec_.n_layer);
        gguf_set_val_u32(g, key("feed_forward_length").c_str(), spec_.n_ff);
        gguf_set_val_u32(g, key("attention.head_count").c_str(), spec_.n_head);
        gguf_set_val_u32(g, key("attention.head_count_kv").c_str(), spec_.n_head_kv);
        gguf_set_val_u32(g, key("attention.key_length").c_str(), static_cast<uint32_t>(head_dim));
        gguf_set_val_u32(g, key("attention.value_length").c_str(), static_cast<uint32_t>(head_dim));
        gguf_set_val_f32(g, key("attention.layer_norm_rms_epsilon").c_str(), 1e-6f);
        gguf_set_val_u32(g, key("rope.dimension_count").c_str(), static_cast<uint32_t>(head_dim));
        gguf_set_val_f32(g, key("rope.freq_base").c_str(), 10000.0f);
        if (moe) {
            gguf_set_val_u32(g, key("expert_count").c_str(), spec_.n_expert);
            gguf_set_val_u32(g, key("expert_used_count").c_str(), spec_.n_expert_used);
            // One width per layer: layers of different sizes, as llama.cpp reads an array here.
            gguf_set_arr_data(g, key("expert_feed_forward_length").c_str(), GGUF_TYPE_UINT32, spec_.n_ff_exp.data(), spec_.n_ff_exp.size());
        }
        if (gemma && spec_.n_swa > 0) {
            gguf_set_val_u32(g, key("attention.sliding_window").c_str(), spec_.n_swa);
            gguf_set_val_u32(g, key("attention.sliding_window_pattern").c_str(), spec_.swa_pattern);
        }
        if (!spec_.chat_template.empty()) gguf_set_val_str(g, "tokenizer.chat_template", spec_.chat_template.c_str());
        if (spec_.pooling_type >= 0) gguf_set_val_u32(g, key("pooling_type").c_str(), static_cast<uint32_t>(spec_.pooling_type));
        if (!spec_.classifier_labels.empty()) {
            std::vector<const char *> labels;
            for (const auto & l : spec_.classifier_labels) labels.push_back(l.c_str());
            gguf_set_arr_str(g, key("classifier.output_labels").c_str(), labels.data(), labels.size());
        }
        if (!spec_.rerank_template.empty()) gguf_set_val_str(g, "tokenizer.chat_template.rerank", spec_.rerank_template.c_str());

        struct Shape {
            std::string name;
            ggml_type type;
            int64_t ne0, ne1, ne2 = 1;  // ne1 == 0: a vector
        };
        std::vector<Shape> shapes = {{"token_embd.weight", wtype, E, V}};
        for (uint32_t il = 0; il < spec_.n_layer; il++) {
            const std::string p = "blk." + std::to_string(il) + ".";
            shapes.push_back({p + "attn_norm.weight", GGML_TYPE_F32, E, 0});
            shapes.push_back({p + "attn_q.weight", wtype, E, E});
            shapes.push_back({p + "attn_k.weight", wtype, E, KV});
            shapes.push_back({p + "attn_v.weight", wtype, E, KV});
            shapes.push_back({p + "attn_output.weight", wtype, E, E});
            if (qk_norm) {
                shapes.push_back({p + "attn_q_norm.weight", GGML_TYPE_F32, head_dim, 0});
                shapes.push_back({p + "attn_k_norm.weight", GGML_TYPE_F32, head_dim, 0});
            }
            if (gemma) shapes.push_back({p + "post_attention_norm.weight", GGML_TYPE_F32, E, 0});
            shapes.push_back({p + "ffn_norm.weight", GGML_TYPE_F32, E, 0});
            if (moe) {
                const int64_t FE = spec_.n_ff_exp[il], X = spec_.n_expert;
                shapes.push_back({p + "ffn_gate_inp.weight", GGML_TYPE_F32, E, X});
                shapes.push_back({p + "ffn_gate_exps.weight", wtype, E, FE, X});
                shapes.push_back({p + "ffn_down_exps.weight", wtype, FE, E, X});
                shapes.push_back({p + "ffn_up_exps.weight", wtype, E, FE, X});
            } else {
                shapes.push_back({p + "ffn_gate.weight", wtype, E, F});
                shapes.push_back({p + "ffn_up.weight", wtype, E, F});
                shapes.push_back({p + "ffn_down.weight", wtype, F, E});
            }
            if (gemma) shapes.push_back({p + "post_ffw_norm.weight", GGML_TYPE_F32, E, 0});
        }
        shapes.push_back({"output_norm.weight", GGML_TYPE_F32, E, 0});
        // Gemma ties its output head to the token embedding: no output.weight.
        if (!gemma && !spec_.tied_output) shapes.push_back({"output.weight", wtype, E, V});
        // The rank head: one row per label (llama.cpp's qwen3 reads cls.output as {n_embd, n_cls_out}).
        if (!spec_.classifier_labels.empty()) shapes.push_back({"cls.output.weight", wtype, E, static_cast<int64_t>(spec_.classifier_labels.size())});

        size_t bytes = 0;
        for (const auto & s : shapes) bytes += ggml_row_size(s.type, s.ne0) * static_cast<size_t>(std::max<int64_t>(s.ne1, 1) * s.ne2) + GGML_MEM_ALIGN;
        ggml_init_params ip = {bytes + shapes.size() * ggml_tensor_overhead(), nullptr, /*no_alloc =*/false};
        ggml_context * ctx = ggml_init(ip);
        if (ctx == nullptr) {
            gguf_free(g);
            throw NativeError("MODEL_CREATE_FAILED", "cannot allocate " + std::to_string(bytes >> 20) + " MiB for the test model");
        }
        for (const auto & s : shapes) {
            ggml_tensor * t = s.ne1 == 0 ? ggml_new_tensor_1d(ctx, s.type, s.ne0)
                              : s.ne2 > 1 ? ggml_new_tensor_3d(ctx, s.type, s.ne0, s.ne1, s.ne2)
                                          : ggml_new_tensor_2d(ctx, s.type, s.ne0, s.ne1);
            ggml_set_name(t, s.name.c_str());
            FillTensor(t, spec_);
            gguf_add_tensor(g, t);
        }
        const bool ok = gguf_write_to_file(g, spec_.out.c_str(), /*only_meta =*/false);
        gguf_free(g);
        ggml_free(ctx);
        if (!ok) throw NativeError("IO_ERROR", "cannot write " + spec_.out);
    }

  private:
    TestModelSpec spec_;
};

// createTestModel({out, vocab, name, chatTemplate, weightType: 'f32' | 'f16', nLayer, nEmbd, nHead,
//                  nHeadKv, nFf, nCtxTrain, seed, stdev}): Promise<void>
Napi::Value CreateTestModel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) ThrowJs(env, "INVALID_ARGUMENT", "createTestModel(spec): spec must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    TestModelSpec s;
    s.out = GetString(o, "out", "");
    s.vocab = GetString(o, "vocab", "");
    s.name = GetString(o, "name", "hearth-test");
    s.chat_template = GetString(o, "chatTemplate", "");
    s.weight_type = GetString(o, "weightType", "f16");
    s.n_layer = static_cast<uint32_t>(GetNumber(o, "nLayer", s.n_layer));
    s.n_embd = static_cast<uint32_t>(GetNumber(o, "nEmbd", s.n_embd));
    s.n_head = static_cast<uint32_t>(GetNumber(o, "nHead", s.n_head));
    s.n_head_kv = static_cast<uint32_t>(GetNumber(o, "nHeadKv", s.n_head_kv));
    s.n_ff = static_cast<uint32_t>(GetNumber(o, "nFf", s.n_ff));
    s.n_ctx_train = static_cast<uint32_t>(GetNumber(o, "nCtxTrain", s.n_ctx_train));
    s.arch = GetString(o, "architecture", "llama");
    s.n_expert = static_cast<uint32_t>(GetNumber(o, "nExpert", 0));
    s.n_expert_used = static_cast<uint32_t>(GetNumber(o, "nExpertUsed", 0));
    s.n_swa = static_cast<uint32_t>(GetNumber(o, "nSwa", 0));
    s.swa_pattern = static_cast<uint32_t>(GetNumber(o, "swaPattern", 6));
    if (o.Has("nFfExp") && o.Get("nFfExp").IsArray()) {
        Napi::Array arr = o.Get("nFfExp").As<Napi::Array>();
        for (uint32_t i = 0; i < arr.Length(); i++) s.n_ff_exp.push_back(arr.Get(i).As<Napi::Number>().Uint32Value());
    }
    if (s.arch != "llama" && s.arch != "qwen3" && s.arch != "qwen3moe" && s.arch != "gemma3") {
        ThrowJs(env, "INVALID_ARGUMENT", "createTestModel: architecture must be llama, qwen3, qwen3moe or gemma3");
    }
    if (s.arch == "qwen3moe" && (s.n_expert == 0 || s.n_expert_used == 0 || s.n_expert_used > s.n_expert || s.n_ff_exp.size() != s.n_layer)) {
        ThrowJs(env, "INVALID_ARGUMENT", "createTestModel: qwen3moe needs nExpert, nExpertUsed <= nExpert and one nFfExp per layer");
    }
    s.seed = static_cast<uint64_t>(GetNumber(o, "seed", 1));
    s.stdev = static_cast<float>(GetNumber(o, "stdev", s.stdev));
    s.residual_scale = static_cast<float>(GetNumber(o, "residualScale", 1.0));
    s.output_stdev = static_cast<float>(GetNumber(o, "outputStdev", -1.0));
    const std::string pooling = GetString(o, "poolingType", "");
    if (pooling == "") s.pooling_type = -1;
    else if (pooling == "none") s.pooling_type = LLAMA_POOLING_TYPE_NONE;
    else if (pooling == "mean") s.pooling_type = LLAMA_POOLING_TYPE_MEAN;
    else if (pooling == "cls") s.pooling_type = LLAMA_POOLING_TYPE_CLS;
    else if (pooling == "last") s.pooling_type = LLAMA_POOLING_TYPE_LAST;
    else if (pooling == "rank") s.pooling_type = LLAMA_POOLING_TYPE_RANK;
    else ThrowJs(env, "INVALID_ARGUMENT", "createTestModel: poolingType must be none, mean, cls, last or rank");
    if (o.Has("classifierLabels") && o.Get("classifierLabels").IsArray()) {
        Napi::Array arr = o.Get("classifierLabels").As<Napi::Array>();
        for (uint32_t i = 0; i < arr.Length(); i++) s.classifier_labels.push_back(arr.Get(i).ToString().Utf8Value());
    }
    s.rerank_template = GetString(o, "rerankTemplate", "");
    s.tied_output = GetBool(o, "tiedOutput", false);
    if (o.Has("addBos") && o.Get("addBos").IsBoolean()) s.add_bos = o.Get("addBos").As<Napi::Boolean>().Value() ? 1 : 0;
    if (o.Has("addEos") && o.Get("addEos").IsBoolean()) s.add_eos = o.Get("addEos").As<Napi::Boolean>().Value() ? 1 : 0;
    if (!s.classifier_labels.empty() && s.arch != "qwen3") {
        ThrowJs(env, "INVALID_ARGUMENT", "createTestModel: classifierLabels (a rank head, cls.output) is read by llama.cpp's qwen3 only among these architectures");
    }
    if (!(s.residual_scale >= 0.0f) || s.residual_scale > 1.0f) ThrowJs(env, "INVALID_ARGUMENT", "createTestModel: residualScale must be between 0 and 1");
    if (s.out.empty() || s.vocab.empty()) ThrowJs(env, "INVALID_ARGUMENT", "createTestModel: 'out' and 'vocab' are required");
    if (s.weight_type != "f16" && s.weight_type != "f32") ThrowJs(env, "INVALID_ARGUMENT", "createTestModel: weightType must be f16 or f32");
    if (s.n_layer == 0 || s.n_head == 0 || s.n_head_kv == 0 || s.n_embd % s.n_head != 0 || s.n_head % s.n_head_kv != 0) {
        ThrowJs(env, "INVALID_ARGUMENT", "createTestModel: need nLayer > 0, nEmbd divisible by nHead, nHead divisible by nHeadKv");
    }
    auto * worker = new CreateTestModelWorker(env, std::move(s));
    worker->Queue();
    return worker->Promise();
}

class QuantizeWorker : public PromiseWorker {
  public:
    QuantizeWorker(Napi::Env env, std::string in, std::string out, llama_ftype ftype, int32_t threads)
        : PromiseWorker(env, "hearth.quantize"), in_(std::move(in)), out_(std::move(out)), ftype_(ftype), threads_(threads) {}

  protected:
    void Run() override {
        llama_model_quantize_params p = llama_model_quantize_default_params();
        p.ftype = ftype_;
        p.nthread = threads_;
        LoadCapture capture;
        SetLoadCapture(&capture);
        uint32_t rc = llama_model_quantize(in_.c_str(), out_.c_str(), &p);
        SetLoadCapture(nullptr);
        if (rc != 0) {
            std::string reason;
            for (const auto & e : capture.errors) reason += (reason.empty() ? "" : "; ") + e;
            throw NativeError("QUANTIZE_FAILED", "quantizing " + in_ + " failed" + (reason.empty() ? std::string() : ": " + reason));
        }
    }

  private:
    std::string in_, out_;
    llama_ftype ftype_;
    int32_t threads_;
};

// quantize(input, output, type: 'q8_0' | 'q4_k_m' | 'f16', threads): Promise<void>
Napi::Value Quantize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsString()) {
        ThrowJs(env, "INVALID_ARGUMENT", "quantize(input, output, type, threads)");
    }
    std::string type = info[2].As<Napi::String>().Utf8Value();
    llama_ftype ftype;
    if (type == "q8_0") ftype = LLAMA_FTYPE_MOSTLY_Q8_0;
    else if (type == "q4_k_m") ftype = LLAMA_FTYPE_MOSTLY_Q4_K_M;
    else if (type == "f16") ftype = LLAMA_FTYPE_MOSTLY_F16;
    else ThrowJs(env, "INVALID_ARGUMENT", "quantize: type '" + type + "' is not one of f16, q8_0, q4_k_m");
    int32_t threads = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : 0;
    auto * worker = new QuantizeWorker(env, info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value(), ftype, threads);
    worker->Queue();
    return worker->Promise();
}

}  // namespace

void InitTestModel(Napi::Env env, Napi::Object exports) {
    exports.Set("createTestModel", Napi::Function::New(env, CreateTestModel, "createTestModel"));
    exports.Set("quantize", Napi::Function::New(env, Quantize, "quantize"));
}

}  // namespace hearth
