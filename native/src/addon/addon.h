// Shared pieces of the hearth addon: the promise-returning worker, error codes, and the log bridge.
#pragma once

#include <napi.h>

#include <atomic>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

namespace hearth {

// An exception with a stable code that survives the trip to JavaScript as `error.code`.
class NativeError : public std::runtime_error {
  public:
    NativeError(std::string code, const std::string & message) : std::runtime_error(message), code_(std::move(code)) {}
    const std::string & code() const { return code_; }

  private:
    std::string code_;
};

Napi::Error MakeError(Napi::Env env, const std::string & code, const std::string & message);
[[noreturn]] void ThrowJs(Napi::Env env, const std::string & code, const std::string & message);

// One blocking call on the libuv pool, settled as a promise. Subclasses implement Run() and Result();
// every exception thrown by Run() becomes a rejection with its code.
class PromiseWorker : public Napi::AsyncWorker {
  public:
    explicit PromiseWorker(Napi::Env env, const char * name)
        : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

    Napi::Promise Promise() { return deferred_.Promise(); }

  protected:
    virtual void Run() = 0;
    virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }

    void Execute() final {
        try {
            Run();
        } catch (const NativeError & e) {
            code_ = e.code();
            SetError(e.what());
        } catch (const std::exception & e) {
            SetError(e.what());
        } catch (...) {
            SetError("unknown native error");
        }
    }

    void OnOK() override { deferred_.Resolve(Result(Env())); }
    void OnError(const Napi::Error & e) override {
        deferred_.Reject(MakeError(Env(), code_, e.Message()).Value());
    }

  private:
    Napi::Promise::Deferred deferred_;
    std::string code_ = "NATIVE_ERROR";
};

// --- log bridge -------------------------------------------------------------------------------------
// llama.cpp and ggml log through one global callback. Lines go to the JS logger when one is set.
// A load also captures, on its own thread, the error lines (for its error message) and the
// "layer N assigned to device X" lines (its placement).
struct LoadCapture {
    std::vector<std::string> errors;
    std::vector<std::pair<int, std::string>> placement;
};

void InstallLogCallback();
void SetLoadCapture(LoadCapture * capture);  // thread-local; nullptr to stop
Napi::Value SetLogger(const Napi::CallbackInfo & info);
void ReleaseLogger();

// --- helpers ------------------------------------------------------------------------------------------
std::string GetString(const Napi::Object & obj, const char * key, const std::string & fallback);
double GetNumber(const Napi::Object & obj, const char * key, double fallback);
bool GetBool(const Napi::Object & obj, const char * key, bool fallback);
ggml_type ParseCacheType(Napi::Env env, const std::string & name, const char * field);

void InitModel(Napi::Env env, Napi::Object exports);
void InitContext(Napi::Env env, Napi::Object exports);
void InitSampler(Napi::Env env, Napi::Object exports);
void InitBackend(Napi::Env env, Napi::Object exports);
void InitTestModel(Napi::Env env, Napi::Object exports);
void InitChat(Napi::Env env, Napi::Object exports);
void InitFit(Napi::Env env, Napi::Object exports);

}  // namespace hearth
