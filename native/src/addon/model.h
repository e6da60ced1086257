#pragma once

#include "addon.h"

namespace hearth {

class AddonModel : public Napi::ObjectWrap<AddonModel> {
  public:
    static Napi::FunctionReference constructor;
    static void Init(Napi::Env env, Napi::Object exports);

    explicit AddonModel(const Napi::CallbackInfo & info);
    ~AddonModel() override;

    llama_model * model() const { return model_; }
    const llama_vocab * vocab() const { return vocab_; }
    std::atomic<int> live_contexts{0};

  private:
    friend class LoadModelWorker;

    Napi::Value Load(const Napi::CallbackInfo & info);
    Napi::Value AbortLoad(const Napi::CallbackInfo & info);
    Napi::Value Info(const Napi::CallbackInfo & info);
    Napi::Value Tokenize(const Napi::CallbackInfo & info);
    Napi::Value Detokenize(const Napi::CallbackInfo & info);
    Napi::Value TokenToPiece(const Napi::CallbackInfo & info);
    Napi::Value IsEog(const Napi::CallbackInfo & info);
    Napi::Value ApplyChatTemplate(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);
    Napi::Value VocabDifference(const Napi::CallbackInfo & info);

    void RequireLoaded(Napi::Env env) const;
    void Free();

    std::string path_;
    llama_model_params params_{};
    std::vector<ggml_backend_dev_t> devices_;  // NULL-terminated when non-empty
    std::vector<std::string> override_patterns_;
    std::vector<llama_model_tensor_buft_override> overrides_;  // {nullptr, nullptr}-terminated when non-empty
    float tensor_split_[128] = {0};            // llama copies llama_max_devices() floats from here
    llama_model * model_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    bool loading_ = false;
    std::atomic<bool> abort_{false};
};

}  // namespace hearth
