// AddonModel: a llama model loaded from a GGUF onto an ordered device list.
#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <regex>

namespace hearth {

Napi::FunctionReference AddonModel::constructor;

namespace {

std::string JoinDeviceNames() {
    std::string names;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        if (!names.empty()) names += ", ";
        names += ggml_backend_dev_name(ggml_backend_dev_get(i));
    }
    return names;
}

struct ProgressData {
    float value;
};

}  // namespace

// new AddonModel(path, {devices, splitMode, tensorSplit, nGpuLayers, mainGpu, loadMode})
AddonModel::AddonModel(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonModel>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) ThrowJs(env, "INVALID_ARGUMENT", "AddonModel(path, options): path must be a string");
    path_ = info[0].As<Napi::String>().Utf8Value();
    Napi::Object opts = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);

    params_ = llama_model_default_params();
    const size_t max_devices = llama_max_devices();

    Napi::Value devs = opts.Get("devices");
    if (devs.IsArray()) {
        Napi::Array arr = devs.As<Napi::Array>();
        if (arr.Length() > max_devices) {
            ThrowJs(env, "INVALID_ARGUMENT", "devices: " + std::to_string(arr.Length()) + " devices given, llama.cpp supports at most " + std::to_string(max_devices));
        }
        for (uint32_t i = 0; i < arr.Length(); i++) {
            std::string name = arr.Get(i).ToString().Utf8Value();
            ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.c_str());
            if (dev == nullptr) {
                ThrowJs(env, "UNKNOWN_DEVICE", "devices[" + std::to_string(i) + "]: no device named '" + name + "' (known: " + JoinDeviceNames() + ")");
            }
            devices_.push_back(dev);
        }
        devices_.push_back(nullptr);
        params_.devices = devices_.data();
    }
    const size_t n_devices = devices_.empty() ? 0 : devices_.size() - 1;

    std::string split = GetString(opts, "splitMode", "layer");
    if (split == "layer") params_.split_mode = LLAMA_SPLIT_MODE_LAYER;
    else if (split == "row") params_.split_mode = LLAMA_SPLIT_MODE_ROW;
    else if (split == "none") params_.split_mode = LLAMA_SPLIT_MODE_NONE;
    else if (split == "tensor") params_.split_mode = LLAMA_SPLIT_MODE_TENSOR;
    else ThrowJs(env, "INVALID_ARGUMENT", "splitMode: '" + split + "' is not one of layer, row, none, tensor");

    Napi::Value ts = opts.Get("tensorSplit");
    if (ts.IsArray()) {
        Napi::Array arr = ts.As<Napi::Array>();
        if (arr.Length() > max_devices || (n_devices > 0 && arr.Length() > n_devices)) {
            ThrowJs(env, "INVALID_SPLIT", "tensorSplit: " + std::to_string(arr.Length()) + " entries for " + std::to_string(n_devices) + " devices; give one share per device");
        }
        double sum = 0;
        for (uint32_t i = 0; i < arr.Length(); i++) {
            double v = arr.Get(i).ToNumber().DoubleValue();
            if (!std::isfinite(v) || v < 0) ThrowJs(env, "INVALID_SPLIT", "tensorSplit[" + std::to_string(i) + "]: shares must be finite and >= 0");
            tensor_split_[i] = static_cast<float>(v);
            sum += v;
        }
        if (arr.Length() > 0 && sum <= 0) ThrowJs(env, "INVALID_SPLIT", "tensorSplit: every share is 0; at least one device must take layers");
        params_.tensor_split = tensor_split_;
    }

    params_.n_gpu_layers = static_cast<int32_t>(GetNumber(opts, "nGpuLayers", -1));
    params_.main_gpu = static_cast<int32_t>(GetNumber(opts, "mainGpu", 0));
    if (params_.split_mode == LLAMA_SPLIT_MODE_NONE && n_devices > 0 && params_.main_gpu >= static_cast<int32_t>(n_devices)) {
        ThrowJs(env, "INVALID_SPLIT", "mainGpu: " + std::to_string(params_.main_gpu) + " is past the " + std::to_string(n_devices) + " devices given");
    }
    // Tensors that go to another device than their layer's: {pattern (a regex over tensor names),
    // device}. hearth places a MoE layer's expert tensors on a second device of the same worker.
    Napi::Value tos = opts.Get("tensorOverrides");
    if (tos.IsArray()) {
        Napi::Array arr = tos.As<Napi::Array>();
        if (arr.Length() + 1 > llama_max_tensor_buft_overrides()) {
            ThrowJs(env, "INVALID_ARGUMENT", "tensorOverrides: " + std::to_string(arr.Length()) + " given, llama.cpp takes at most " + std::to_string(llama_max_tensor_buft_overrides() - 1));
        }
        override_patterns_.reserve(arr.Length());
        for (uint32_t i = 0; i < arr.Length(); i++) {
            Napi::Value item = arr.Get(i);
            if (!item.IsObject()) ThrowJs(env, "INVALID_ARGUMENT", "tensorOverrides[" + std::to_string(i) + "] must be {pattern, device}");
            Napi::Object o = item.As<Napi::Object>();
            std::string pattern = GetString(o, "pattern", "");
            std::string name = GetString(o, "device", "");
            if (pattern.empty()) ThrowJs(env, "INVALID_ARGUMENT", "tensorOverrides[" + std::to_string(i) + "].pattern is empty");
            try {
                std::regex check(pattern);
            } catch (const std::regex_error & e) {
                ThrowJs(env, "INVALID_ARGUMENT", "tensorOverrides[" + std::to_string(i) + "].pattern '" + pattern + "' is not a valid regular expression: " + e.what());
            }
            ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.c_str());
            if (dev == nullptr) {
                ThrowJs(env, "UNKNOWN_DEVICE", "tensorOverrides[" + std::to_string(i) + "]: no device named '" + name + "' (known: " + JoinDeviceNames() + ")");
            }
            override_patterns_.push_back(pattern);
            overrides_.push_back({nullptr, ggml_backend_dev_buffer_type(dev)});
        }
        // The strings are in place now (no more reallocation): point the overrides at them.
        for (size_t i = 0; i < overrides_.size(); i++) overrides_[i].pattern = override_patterns_[i].c_str();
        if (!overrides_.empty()) {
            overrides_.push_back({nullptr, nullptr});
            params_.tensor_buft_overrides = overrides_.data();
        }
    }

    std::string load_mode = GetString(opts, "loadMode", "auto");
    params_.load_mode = llama_load_mode_from_str(load_mode.c_str());
    params_.check_tensors = GetBool(opts, "checkTensors", false);
    // The tokenizer alone (no tensors): enough to compare vocabularies.
    params_.vocab_only = GetBool(opts, "vocabOnly", false);
}

AddonModel::~AddonModel() { Free(); }

void AddonModel::Free() {
    if (model_ != nullptr) {
        llama_model_free(model_);
        model_ = nullptr;
        vocab_ = nullptr;
    }
}

void AddonModel::RequireLoaded(Napi::Env env) const {
    if (model_ == nullptr) ThrowJs(env, "NOT_LOADED", "the model is not loaded (or was disposed)");
}

class LoadModelWorker : public PromiseWorker {
  public:
    LoadModelWorker(Napi::Env env, AddonModel * model, Napi::Function on_progress)
        : PromiseWorker(env, "hearth.loadModel"), model_(model) {
        model_ref_ = Napi::Persistent(model->Value());
        if (!on_progress.IsEmpty()) {
            progress_ = Napi::ThreadSafeFunction::New(env, on_progress, "hearth-load-progress", 0, 1);
            has_progress_ = true;
        }
    }
    ~LoadModelWorker() override {
        if (has_progress_) progress_.Release();
    }

  protected:
    static bool OnProgress(float value, void * user_data) {
        auto * self = static_cast<LoadModelWorker *>(user_data);
        if (self->model_->abort_.load()) return false;
        // llama reports a rising fraction; forward only increases so listeners see a monotonic 0..1.
        if (self->has_progress_ && value > self->last_progress_) {
            self->last_progress_ = value;
            auto * data = new ProgressData{value};
            napi_status st = self->progress_.NonBlockingCall(data, [](Napi::Env env, Napi::Function fn, ProgressData * d) {
                if (env != nullptr && fn != nullptr) fn.Call({Napi::Number::New(env, d->value)});
                delete d;
            });
            if (st != napi_ok) delete data;
        }
        return true;
    }

    void Run() override {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(model_->path_, ec)) {
            throw NativeError("MODEL_NOT_FOUND", "model file not found: " + model_->path_);
        }
        llama_model_params params = model_->params_;
        params.progress_callback = OnProgress;
        params.progress_callback_user_data = this;
        SetLoadCapture(&capture_);
        llama_model * m = llama_model_load_from_file(model_->path_.c_str(), params);
        SetLoadCapture(nullptr);
        if (m == nullptr) {
            if (model_->abort_.load()) throw NativeError("ABORTED", "model load cancelled: " + model_->path_);
            std::string reason;
            for (const auto & e : capture_.errors) reason += (reason.empty() ? "" : "; ") + e;
            throw NativeError("MODEL_LOAD_FAILED", "failed to load " + model_->path_ + (reason.empty() ? "" : ": " + reason));
        }
        model_->model_ = m;
        model_->vocab_ = llama_model_get_vocab(m);
    }

    Napi::Value Result(Napi::Env env) override {
        model_->loading_ = false;
        Napi::Object o = Napi::Object::New(env);
        Napi::Array placement = Napi::Array::New(env, capture_.placement.size());
        for (size_t i = 0; i < capture_.placement.size(); i++) {
            Napi::Object p = Napi::Object::New(env);
            p.Set("layer", capture_.placement[i].first);
            p.Set("device", capture_.placement[i].second);
            placement.Set(static_cast<uint32_t>(i), p);
        }
        o.Set("placement", placement);
        return o;
    }

    void OnError(const Napi::Error & e) override {
        model_->loading_ = false;
        PromiseWorker::OnError(e);
    }

  private:
    AddonModel * model_;
    Napi::ObjectReference model_ref_;  // keeps the JS object (and so this model) alive during the load
    Napi::ThreadSafeFunction progress_;
    bool has_progress_ = false;
    float last_progress_ = -1.0f;
    LoadCapture capture_;
};

// load(onProgress?): Promise<{placement}>
Napi::Value AddonModel::Load(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (model_ != nullptr || loading_) ThrowJs(env, "INVALID_STATE", "load() was already called on this model");
    loading_ = true;
    abort_ = false;
    Napi::Function on_progress = info.Length() > 0 && info[0].IsFunction() ? info[0].As<Napi::Function>() : Napi::Function();
    auto * worker = new LoadModelWorker(env, this, on_progress);
    worker->Queue();
    return worker->Promise();
}

Napi::Value AddonModel::AbortLoad(const Napi::CallbackInfo & info) {
    abort_ = true;
    return info.Env().Undefined();
}

static const char * VocabTypeName(enum llama_vocab_type t) {
    switch (t) {
        case LLAMA_VOCAB_TYPE_NONE: return "no";
        case LLAMA_VOCAB_TYPE_SPM: return "SPM";
        case LLAMA_VOCAB_TYPE_BPE: return "BPE";
        case LLAMA_VOCAB_TYPE_WPM: return "WPM";
        case LLAMA_VOCAB_TYPE_UGM: return "UGM";
        case LLAMA_VOCAB_TYPE_RWKV: return "RWKV";
        default: return "another";
    }
}

// vocabDifference(other): null when a draft `other` may speculate for this model, by llama.cpp's own
// rules (common_speculative_are_compatible): the same tokenizer type, the same BOS/EOS use and ids, at
// most 128 tokens more or fewer, and the same text for every token from id 5 on; otherwise
// {reason, vocabulary, otherVocabulary}: what differs, and both vocabularies in words.
Napi::Value AddonModel::VocabDifference(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireLoaded(env);
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(constructor.Value())) {
        ThrowJs(env, "INVALID_ARGUMENT", "vocabDifference(other): other must be an AddonModel");
    }
    AddonModel * other = Unwrap(info[0].As<Napi::Object>());
    other->RequireLoaded(env);
    const llama_vocab * a = vocab_;
    const llama_vocab * b = other->vocab_;
    const int na = llama_vocab_n_tokens(a);
    const int nb = llama_vocab_n_tokens(b);
    auto describe = [](const llama_vocab * v, int n) {
        return std::string(VocabTypeName(llama_vocab_type(v))) + " tokenizer with " + std::to_string(n) + " tokens";
    };
    std::string why;
    if (llama_vocab_type(a) != llama_vocab_type(b)) why = "the tokenizers differ";
    else if (llama_vocab_get_add_bos(a) != llama_vocab_get_add_bos(b) || (llama_vocab_get_add_bos(a) && llama_vocab_bos(a) != llama_vocab_bos(b))) why = "the BOS tokens differ";
    else if (llama_vocab_get_add_eos(a) != llama_vocab_get_add_eos(b) || (llama_vocab_get_add_eos(a) && llama_vocab_eos(a) != llama_vocab_eos(b))) why = "the EOS tokens differ";
    else if (std::abs(na - nb) > 128) why = "the vocabulary sizes differ by more than 128";
    else {
        for (int i = 5; i < std::min(na, nb); i++) {
            if (std::strcmp(llama_vocab_get_text(a, i), llama_vocab_get_text(b, i)) != 0) {
                why = "token " + std::to_string(i) + " is '" + llama_vocab_get_text(a, i) + "' in one and '" + llama_vocab_get_text(b, i) + "' in the other";
                break;
            }
        }
    }
    if (why.empty()) return env.Null();
    Napi::Object out = Napi::Object::New(env);
    out.Set("reason", why);
    out.Set("vocabulary", describe(a, na));
    out.Set("otherVocabulary", describe(b, nb));
    return out;
}

Napi::Value AddonModel::Info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireLoaded(env);
    Napi::Object o = Napi::Object::New(env);
    char desc[256] = {0};
    llama_model_desc(model_, desc, sizeof(desc));
    o.Set("description", desc);
    o.Set("nLayer", llama_model_n_layer(model_));
    o.Set("nEmbd", llama_model_n_embd(model_));
    o.Set("nCtxTrain", llama_model_n_ctx_train(model_));
    o.Set("nVocab", llama_vocab_n_tokens(vocab_));
    o.Set("sizeBytes", Napi::Number::New(env, static_cast<double>(llama_model_size(model_))));
    o.Set("nParams", Napi::Number::New(env, static_cast<double>(llama_model_n_params(model_))));
    o.Set("bos", llama_vocab_bos(vocab_));
    o.Set("eos", llama_vocab_eos(vocab_));
    const char * tmpl = llama_model_chat_template(model_, nullptr);
    o.Set("chatTemplate", tmpl ? Napi::Value(Napi::String::New(env, tmpl)) : env.Null());
    // What embeddings and rerank need: the pooled width, the rank head's outputs, the rerank prompt
    // (tokenizer.chat_template.rerank) and the special tokens llama-server puts between query and document.
    o.Set("nEmbdOut", llama_model_n_embd_out(model_));
    o.Set("nClsOut", Napi::Number::New(env, llama_model_n_cls_out(model_)));
    const char * rerank = llama_model_chat_template(model_, "rerank");
    o.Set("rerankTemplate", rerank ? Napi::Value(Napi::String::New(env, rerank)) : env.Null());
    o.Set("sep", llama_vocab_sep(vocab_));
    o.Set("addBos", llama_vocab_get_add_bos(vocab_));
    o.Set("addEos", llama_vocab_get_add_eos(vocab_));
    o.Set("addSep", llama_vocab_get_add_sep(vocab_));
    return o;
}

// tokenize(text, addSpecial, parseSpecial): Int32Array
Napi::Value AddonModel::Tokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireLoaded(env);
    if (info.Length() < 1 || !info[0].IsString()) ThrowJs(env, "INVALID_ARGUMENT", "tokenize(text): text must be a string");
    std::string text = info[0].As<Napi::String>().Utf8Value();
    bool add_special = info.Length() > 1 && info[1].ToBoolean().Value();
    bool parse_special = info.Length() > 2 && info[2].ToBoolean().Value();
    if (text.size() > static_cast<size_t>(INT32_MAX / 2)) ThrowJs(env, "INVALID_ARGUMENT", "tokenize(text): text too long");
    std::vector<llama_token> tokens(text.size() + 2);
    int32_t n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                               static_cast<int32_t>(tokens.size()), add_special, parse_special);
    if (n < 0) {
        if (n == INT32_MIN) ThrowJs(env, "INVALID_ARGUMENT", "tokenize(text): too many tokens");
        tokens.resize(static_cast<size_t>(-n));
        n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                           static_cast<int32_t>(tokens.size()), add_special, parse_special);
    }
    Napi::Int32Array out = Napi::Int32Array::New(env, static_cast<size_t>(std::max(n, 0)));
    std::copy(tokens.begin(), tokens.begin() + std::max(n, 0), out.Data());
    return out;
}

static std::vector<llama_token> TokensArg(Napi::Env env, const Napi::Value & v, int32_t n_vocab) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
        ThrowJs(env, "INVALID_ARGUMENT", "tokens must be an Int32Array");
    }
    Napi::Int32Array arr = v.As<Napi::Int32Array>();
    std::vector<llama_token> out(arr.Data(), arr.Data() + arr.ElementLength());
    for (size_t i = 0; i < out.size(); i++) {
        if (out[i] < 0 || out[i] >= n_vocab) {
            ThrowJs(env, "INVALID_ARGUMENT", "tokens[" + std::to_string(i) + "]: " + std::to_string(out[i]) + " is outside the vocabulary (0.." + std::to_string(n_vocab - 1) + ")");
        }
    }
    return out;
}

// detokenize(tokens, removeSpecial, unparseSpecial): string
Napi::Value AddonModel::Detokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireLoaded(env);
    std::vector<llama_token> tokens = TokensArg(env, info[0], llama_vocab_n_tokens(vocab_));
    bool remove_special = info.Length() > 1 && info[1].ToBoolean().Value();
    bool unparse_special = info.Length() > 2 && info[2].ToBoolean().Value();
    std::string text(tokens.size() * 8 + 16, '\0');
    int32_t n = llama_detokenize(vocab_, tokens.data(), static_cast<int32_t>(tokens.size()), text.data(),
                                 static_cast<int32_t>(text.size()), remove_special, unparse_special);
    if (n < 0) {
        text.resize(static_cast<size_t>(-n));
        n = llama_detokenize(vocab_, tokens.data(), static_cast<int32_t>(tokens.size()), text.data(),
                             static_cast<int32_t>(text.size()), remove_special, unparse_special);
    }
    text.resize(static_cast<size_t>(std::max(n, 0)));
    return Napi::String::New(env, text);
}

// tokenToPiece(token, special): Buffer. Bytes, not a string: a piece can be part of a UTF-8 sequence.
Napi::Value AddonModel::TokenToPiece(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireLoaded(env);
    if (info.Length() < 1 || !info[0].IsNumber()) ThrowJs(env, "INVALID_ARGUMENT", "tokenToPiece(token): token must be a number");
    int32_t token = info[0].As<Napi::Number>().Int32Value();
    if (token < 0 || token >= llama_vocab_n_tokens(vocab_)) ThrowJs(env, "INVALID_ARGUMENT", "tokenToPiece: token " + std::to_string(token) + " is outside the vocabulary");
    bool special = info.Length() > 1 && info[1].ToBoolean().Value();
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, special);
    if (n < 0) {
        std::vector<char> big(static_cast<size_t>(-n));
        n = llama_token_to_piece(vocab_, token, big.data(), static_cast<int32_t>(big.size()), 0, special);
        return Napi::Buffer<char>::Copy(env, big.data(), static_cast<size_t>(std::max(n, 0)));
    }
    return Napi::Buffer<char>::Copy(env, buf, static_cast<size_t>(n));
}

Napi::Value AddonModel::IsEog(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireLoaded(env);
    return Napi::Boolean::New(env, llama_vocab_is_eog(vocab_, info[0].ToNumber().Int32Value()));
}

// applyChatTemplate(messages: {role, content}[], addAssistant, template?: string | null): string
Napi::Value AddonModel::ApplyChatTemplate(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    RequireLoaded(env);
    if (info.Length() < 1 || !info[0].IsArray()) ThrowJs(env, "INVALID_ARGUMENT", "applyChatTemplate(messages): messages must be an array");
    Napi::Array arr = info[0].As<Napi::Array>();
    bool add_assistant = info.Length() < 2 || info[1].ToBoolean().Value();
    std::string tmpl;
    if (info.Length() > 2 && info[2].IsString()) {
        tmpl = info[2].As<Napi::String>().Utf8Value();
    } else {
        const char * own = llama_model_chat_template(model_, nullptr);
        // A model without a template gets ChatML, as llama-server does.
        tmpl = own ? own : "chatml";
    }
    std::vector<std::string> roles(arr.Length()), contents(arr.Length());
    std::vector<llama_chat_message> msgs(arr.Length());
    size_t total = 0;
    for (uint32_t i = 0; i < arr.Length(); i++) {
        Napi::Value m = arr.Get(i);
        if (!m.IsObject()) ThrowJs(env, "INVALID_ARGUMENT", "messages[" + std::to_string(i) + "] must be an object");
        Napi::Object mo = m.As<Napi::Object>();
        if (!mo.Get("role").IsString() || !mo.Get("content").IsString()) {
            ThrowJs(env, "INVALID_ARGUMENT", "messages[" + std::to_string(i) + "] needs string 'role' and 'content'");
        }
        roles[i] = mo.Get("role").As<Napi::String>().Utf8Value();
        contents[i] = mo.Get("content").As<Napi::String>().Utf8Value();
        msgs[i] = {roles[i].c_str(), contents[i].c_str()};
        total += roles[i].size() + contents[i].size();
    }
    std::vector<char> buf(total * 2 + 1024);
    int32_t n = llama_chat_apply_template(tmpl.c_str(), msgs.data(), msgs.size(), add_assistant, buf.data(), static_cast<int32_t>(buf.size()));
    if (n > static_cast<int32_t>(buf.size())) {
        buf.resize(static_cast<size_t>(n));
        n = llama_chat_apply_template(tmpl.c_str(), msgs.data(), msgs.size(), add_assistant, buf.data(), static_cast<int32_t>(buf.size()));
    }
    if (n < 0) ThrowJs(env, "UNSUPPORTED_TEMPLATE", "this model's chat template is not one llama.cpp can apply; pass a template name such as 'chatml'");
    return Napi::String::New(env, buf.data(), static_cast<size_t>(n));
}

Napi::Value AddonModel::Dispose(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (loading_) ThrowJs(env, "INVALID_STATE", "cannot dispose a model while it loads; call abortLoad() and await the load first");
    if (live_contexts.load() > 0) ThrowJs(env, "INVALID_STATE", "dispose the model's contexts before the model");
    Free();
    return env.Undefined();
}

void AddonModel::Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "AddonModel",
                                    {
                                        InstanceMethod("load", &AddonModel::Load),
                                        InstanceMethod("abortLoad", &AddonModel::AbortLoad),
                                        InstanceMethod("info", &AddonModel::Info),
                                        InstanceMethod("tokenize", &AddonModel::Tokenize),
                                        InstanceMethod("detokenize", &AddonModel::Detokenize),
                                        InstanceMethod("tokenToPiece", &AddonModel::TokenToPiece),
                                        InstanceMethod("isEog", &AddonModel::IsEog),
                                        InstanceMethod("applyChatTemplate", &AddonModel::ApplyChatTemplate),
                                        InstanceMethod("dispose", &AddonModel::Dispose),
                                        InstanceMethod("vocabDifference", &AddonModel::VocabDifference),
                                    });
    constructor = Napi::Persistent(fn);
    constructor.SuppressDestruct();
    exports.Set("AddonModel", fn);
}

void InitModel(Napi::Env env, Napi::Object exports) { AddonModel::Init(env, exports); }

}  // namespace hearth
