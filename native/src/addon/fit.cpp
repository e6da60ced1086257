// fitParams(path, {devices, margins, nCtx, nSeqMax, nBatch, nUbatch}): what llama.cpp's own fit
// (common_fit_params, llama-server's --fit) chooses for a model on these devices: layers per device,
// and which tensors (MoE experts first) it moves to the host. hearth's planner is tested against it.
// `margins` are bytes each device must keep free: a margin of (reported free - limit) makes a device
// look as small as the limit.
#include <string>
#include <vector>

#include "addon.h"
#include "fit.h"

namespace hearth {

namespace {

struct FitOverride {
    std::string pattern;
    std::string device;
};

class FitWorker : public PromiseWorker {
  public:
    FitWorker(Napi::Env env, std::string path, std::vector<ggml_backend_dev_t> devices, std::vector<size_t> margins, llama_context_params cparams)
        : PromiseWorker(env, "hearth.fitParams"), path_(std::move(path)), devices_(std::move(devices)), margins_(std::move(margins)), cparams_(cparams) {}

  protected:
    void Run() override {
        llama_model_params mparams = llama_model_default_params();
        devices_.push_back(nullptr);
        mparams.devices = devices_.data();
        std::vector<float> split(llama_max_devices(), 0.0f);
        std::vector<llama_model_tensor_buft_override> overrides(llama_max_tensor_buft_overrides(), {nullptr, nullptr});
        margins_.resize(llama_max_devices(), 0);
        status_ = common_fit_params(path_.c_str(), &mparams, &cparams_, split.data(), overrides.data(), margins_.data(),
                                    cparams_.n_ctx, nullptr, GGML_LOG_LEVEL_ERROR);
        if (status_ == COMMON_PARAMS_FIT_STATUS_ERROR) throw NativeError("FIT_FAILED", "llama.cpp's fit failed on " + path_ + " (see the log)");
        n_gpu_layers_ = mparams.n_gpu_layers;
        for (size_t i = 0; i + 1 < devices_.size(); i++) split_.push_back(split[i]);
        for (const auto & o : overrides) {
            if (o.pattern == nullptr) break;
            ggml_backend_dev_t dev = o.buft ? ggml_backend_buft_get_device(o.buft) : nullptr;
            overrides_.push_back({o.pattern, dev ? ggml_backend_dev_name(dev) : (o.buft ? ggml_backend_buft_name(o.buft) : "")});
        }
        n_ctx_ = cparams_.n_ctx;
    }

    Napi::Value Result(Napi::Env env) override {
        Napi::Object o = Napi::Object::New(env);
        o.Set("fits", status_ == COMMON_PARAMS_FIT_STATUS_SUCCESS);
        o.Set("nGpuLayers", n_gpu_layers_);
        Napi::Array split = Napi::Array::New(env, split_.size());
        for (size_t i = 0; i < split_.size(); i++) split.Set(static_cast<uint32_t>(i), Napi::Number::New(env, split_[i]));
        o.Set("tensorSplit", split);
        Napi::Array overrides = Napi::Array::New(env, overrides_.size());
        for (size_t i = 0; i < overrides_.size(); i++) {
            Napi::Object to = Napi::Object::New(env);
            to.Set("pattern", overrides_[i].pattern);
            to.Set("device", overrides_[i].device);
            overrides.Set(static_cast<uint32_t>(i), to);
        }
        o.Set("tensorOverrides", overrides);
        o.Set("nCtx", Napi::Number::New(env, n_ctx_));
        return o;
    }

  private:
    std::string path_;
    std::vector<ggml_backend_dev_t> devices_;
    std::vector<size_t> margins_;
    llama_context_params cparams_;
    common_params_fit_status status_ = COMMON_PARAMS_FIT_STATUS_ERROR;
    int32_t n_gpu_layers_ = 0;
    std::vector<float> split_;
    std::vector<FitOverride> overrides_;
    uint32_t n_ctx_ = 0;
};

Napi::Value FitParams(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) {
        ThrowJs(env, "INVALID_ARGUMENT", "fitParams(path, {devices, margins, nCtx, nSeqMax, nBatch, nUbatch})");
    }
    std::string path = info[0].As<Napi::String>().Utf8Value();
    Napi::Object o = info[1].As<Napi::Object>();
    std::vector<ggml_backend_dev_t> devices;
    std::vector<size_t> margins;
    Napi::Value devs = o.Get("devices");
    if (!devs.IsArray() || devs.As<Napi::Array>().Length() == 0) ThrowJs(env, "INVALID_ARGUMENT", "fitParams: devices must name at least one device");
    Napi::Array arr = devs.As<Napi::Array>();
    if (arr.Length() > llama_max_devices()) ThrowJs(env, "INVALID_ARGUMENT", "fitParams: more devices than llama.cpp supports");
    Napi::Value ms = o.Get("margins");
    Napi::Array marr = ms.IsArray() ? ms.As<Napi::Array>() : Napi::Array::New(env);
    for (uint32_t i = 0; i < arr.Length(); i++) {
        std::string name = arr.Get(i).ToString().Utf8Value();
        ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.c_str());
        if (dev == nullptr) ThrowJs(env, "UNKNOWN_DEVICE", "fitParams: no device named '" + name + "'");
        devices.push_back(dev);
        double m = i < marr.Length() ? marr.Get(i).ToNumber().DoubleValue() : 0;
        margins.push_back(m > 0 ? static_cast<size_t>(m) : 0);
    }
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = static_cast<uint32_t>(GetNumber(o, "nCtx", 4096));
    cparams.n_seq_max = static_cast<uint32_t>(GetNumber(o, "nSeqMax", 1));
    cparams.n_batch = static_cast<uint32_t>(GetNumber(o, "nBatch", 512));
    cparams.n_ubatch = static_cast<uint32_t>(GetNumber(o, "nUbatch", 512));
    cparams.swa_full = false;
    auto * worker = new FitWorker(env, std::move(path), std::move(devices), std::move(margins), cparams);
    Napi::Promise p = worker->Promise();
    worker->Queue();
    return p;
}

}  // namespace

void InitFit(Napi::Env env, Napi::Object exports) {
    exports.Set("fitParams", Napi::Function::New(env, FitParams, "fitParams"));
}

}  // namespace hearth
