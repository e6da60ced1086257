// Module entry: backend start-up, the log bridge, errors and option helpers shared by every class.
#include "addon.h"

#include <cstdio>
#include <cstring>
#include <mutex>

namespace hearth {

Napi::Error MakeError(Napi::Env env, const std::string & code, const std::string & message) {
    Napi::Error error = Napi::Error::New(env, message);
    error.Set("code", Napi::String::New(env, code));
    return error;
}

void ThrowJs(Napi::Env env, const std::string & code, const std::string & message) {
    throw MakeError(env, code, message);
}

std::string GetString(const Napi::Object & obj, const char * key, const std::string & fallback) {
    Napi::Value v = obj.Get(key);
    return v.IsString() ? v.As<Napi::String>().Utf8Value() : fallback;
}

double GetNumber(const Napi::Object & obj, const char * key, double fallback) {
    Napi::Value v = obj.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

bool GetBool(const Napi::Object & obj, const char * key, bool fallback) {
    Napi::Value v = obj.Get(key);
    return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
}

ggml_type ParseCacheType(Napi::Env env, const std::string & name, const char * field) {
    static const std::pair<const char *, ggml_type> kTypes[] = {
        {"f32", GGML_TYPE_F32},   {"f16", GGML_TYPE_F16},   {"bf16", GGML_TYPE_BF16},   {"q8_0", GGML_TYPE_Q8_0},
        {"q4_0", GGML_TYPE_Q4_0}, {"q4_1", GGML_TYPE_Q4_1}, {"q5_0", GGML_TYPE_Q5_0}, {"q5_1", GGML_TYPE_Q5_1},
    };
    for (const auto & [n, t] : kTypes) {
        if (name == n) return t;
    }
    ThrowJs(env, "INVALID_ARGUMENT",
            std::string(field) + ": unknown cache type '" + name + "' (use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1)");
}

// --- log bridge -----------------------------------------------------------------------------------

namespace {

struct LogLine {
    int level;
    std::string text;
};

std::mutex g_log_mutex;
Napi::ThreadSafeFunction g_log_fn;
bool g_log_fn_set = false;
int g_log_min_level = GGML_LOG_LEVEL_INFO;

thread_local std::string t_pending;
thread_local int t_pending_level = GGML_LOG_LEVEL_INFO;
thread_local LoadCapture * t_capture = nullptr;

const char * LevelName(int level) {
    switch (level) {
        case GGML_LOG_LEVEL_DEBUG: return "debug";
        case GGML_LOG_LEVEL_WARN: return "warn";
        case GGML_LOG_LEVEL_ERROR: return "error";
        default: return "info";
    }
}

void Capture(int level, const std::string & line) {
    if (t_capture == nullptr) return;
    if (level == GGML_LOG_LEVEL_ERROR) t_capture->errors.push_back(line);
    int layer = -1;
    char device[128] = {0};
    // llama-model.cpp: "load_tensors: layer %3d assigned to device %s, is_swa = %d"
    if (std::sscanf(line.c_str(), "load_tensors: layer %d assigned to device %127[^,]", &layer, device) == 2) {
        t_capture->placement.emplace_back(layer, device);
    }
}

void Emit(int level, std::string line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (line.empty()) return;
    Capture(level, line);
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (level < g_log_min_level) return;
    if (!g_log_fn_set) {
        // Without a JS logger only problems are worth printing; they go to stderr like llama.cpp's own.
        if (level >= GGML_LOG_LEVEL_WARN) std::fprintf(stderr, "[llama.cpp %s] %s\n", LevelName(level), line.c_str());
        return;
    }
    auto * data = new LogLine{level, std::move(line)};
    napi_status status = g_log_fn.NonBlockingCall(data, [](Napi::Env env, Napi::Function fn, LogLine * l) {
        if (env != nullptr && fn != nullptr) {
            fn.Call({Napi::String::New(env, LevelName(l->level)), Napi::String::New(env, l->text)});
        }
        delete l;
    });
    if (status != napi_ok) delete data;
}

void LogCallback(ggml_log_level level, const char * text, void * /*user_data*/) {
    if (text == nullptr) return;
    if (level != GGML_LOG_LEVEL_CONT) {
        if (!t_pending.empty()) Emit(t_pending_level, std::move(t_pending));
        t_pending.clear();
        t_pending_level = level == GGML_LOG_LEVEL_NONE ? GGML_LOG_LEVEL_INFO : level;
    }
    t_pending += text;
    // Emit every complete line; keep a partial one for the continuation that follows.
    size_t nl;
    while ((nl = t_pending.find('\n')) != std::string::npos) {
        std::string line = t_pending.substr(0, nl);
        t_pending.erase(0, nl + 1);
        Emit(t_pending_level, std::move(line));
    }
}

}  // namespace

void InstallLogCallback() {
    llama_log_set(LogCallback, nullptr);
    ggml_log_set(LogCallback, nullptr);
}

void SetLoadCapture(LoadCapture * capture) { t_capture = capture; }

void ReleaseLogger() {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (g_log_fn_set) {
        g_log_fn.Release();
        g_log_fn_set = false;
    }
}

// setLogger(fn | null, minLevel: 'debug' | 'info' | 'warn' | 'error')
Napi::Value SetLogger(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    ReleaseLogger();
    std::string level = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "info";
    int min_level = level == "debug" ? GGML_LOG_LEVEL_DEBUG
                    : level == "warn" ? GGML_LOG_LEVEL_WARN
                    : level == "error" ? GGML_LOG_LEVEL_ERROR
                                       : GGML_LOG_LEVEL_INFO;
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_log_min_level = min_level;
    if (info.Length() > 0 && info[0].IsFunction()) {
        g_log_fn = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "hearth-llama-log", 0, 1);
        g_log_fn.Unref(env);  // logging alone must never keep the process alive
        g_log_fn_set = true;
    }
    return env.Undefined();
}

}  // namespace hearth

namespace {

void Cleanup(void * /*arg*/) {
    hearth::ReleaseLogger();
    llama_backend_free();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
    hearth::InstallLogCallback();
    llama_backend_init();
    hearth::InitBackend(env, exports);
    hearth::InitModel(env, exports);
    hearth::InitContext(env, exports);
    hearth::InitSampler(env, exports);
    hearth::InitTestModel(env, exports);
    hearth::InitChat(env, exports);
    hearth::InitFit(env, exports);
    exports.Set("setLogger", Napi::Function::New(env, hearth::SetLogger, "setLogger"));
    napi_add_env_cleanup_hook(env, Cleanup, nullptr);
    return exports;
}

}  // namespace

NODE_API_MODULE(hearth, Init)
