#pragma once

#include "addon.h"

namespace hearth {

class AddonSampler : public Napi::ObjectWrap<AddonSampler> {
  public:
    static Napi::FunctionReference constructor;
    static void Init(Napi::Env env, Napi::Object exports);

    explicit AddonSampler(const Napi::CallbackInfo & info);
    ~AddonSampler() override;

    llama_sampler * chain() const { return chain_; }
    std::atomic<bool> in_use{false};

  private:
    Napi::Value Accept(const Napi::CallbackInfo & info);
    Napi::Value Reset(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);

    llama_sampler * chain_ = nullptr;
    int32_t n_vocab_ = 0;
};

}  // namespace hearth
