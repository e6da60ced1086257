// Process-wide facts and registries: versions, devices, RPC servers, GGUF headers.
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "addon.h"
#include "ggml-rpc.h"
#include "gguf.h"

namespace hearth {

namespace {

const char * DeviceTypeName(enum ggml_backend_dev_type type) {
    switch (type) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default: return "unknown";
    }
}

struct DeviceFacts {
    std::string name, description, backend, type;
    size_t free = 0, total = 0;
};

DeviceFacts Describe(ggml_backend_dev_t dev) {
    DeviceFacts d;
    d.name = ggml_backend_dev_name(dev);
    d.description = ggml_backend_dev_description(dev);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    d.backend = reg ? ggml_backend_reg_name(reg) : "";
    d.type = DeviceTypeName(ggml_backend_dev_type(dev));
    ggml_backend_dev_memory(dev, &d.free, &d.total);
    return d;
}

Napi::Object ToJs(Napi::Env env, const DeviceFacts & d) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", d.name);
    o.Set("description", d.description);
    o.Set("backend", d.backend);
    o.Set("type", d.type);
    o.Set("freeBytes", Napi::Number::New(env, static_cast<double>(d.free)));
    o.Set("totalBytes", Napi::Number::New(env, static_cast<double>(d.total)));
    return o;
}

Napi::Value SystemInfo(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("llamaCppRelease", HEARTH_LLAMA_RELEASE);
    o.Set("llamaVersion", llama_version());
    o.Set("ggmlVersion", ggml_version());
    o.Set("ggmlCommit", ggml_commit());
    char proto[32];
    std::snprintf(proto, sizeof(proto), "%d.%d.%d", RPC_PROTO_MAJOR_VERSION, RPC_PROTO_MINOR_VERSION,
                  RPC_PROTO_PATCH_VERSION);
    o.Set("rpcProtocol", proto);
    o.Set("maxDevices", Napi::Number::New(env, static_cast<double>(llama_max_devices())));
    o.Set("supportsRpc", llama_supports_rpc());
    o.Set("cpuFeatures", llama_print_system_info());
    Napi::Array regs = Napi::Array::New(env);
    for (size_t i = 0; i < ggml_backend_reg_count(); i++) {
        regs.Set(static_cast<uint32_t>(i), ggml_backend_reg_name(ggml_backend_reg_get(i)));
    }
    o.Set("backends", regs);
    return o;
}

// Local devices only: asking an RPC device for its memory is a network round trip, done by addRpcServer.
Napi::Value ListDevices(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    uint32_t n = 0;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
        if (reg != nullptr && std::string(ggml_backend_reg_name(reg)) == "RPC") continue;
        out.Set(n++, ToJs(env, Describe(dev)));
    }
    return out;
}

// --- RPC servers ------------------------------------------------------------------------------------
// llama.cpp caches a server per exact endpoint string and cannot unregister its devices, so registration
// happens once per endpoint for the life of the process.
std::mutex g_rpc_mutex;
std::map<std::string, ggml_backend_reg_t> g_rpc_regs;

class AddRpcServerWorker : public PromiseWorker {
  public:
    AddRpcServerWorker(Napi::Env env, std::string endpoint)
        : PromiseWorker(env, "hearth.addRpcServer"), endpoint_(std::move(endpoint)) {}

  protected:
    void Run() override {
        std::lock_guard<std::mutex> lock(g_rpc_mutex);
        ggml_backend_reg_t reg;
        auto it = g_rpc_regs.find(endpoint_);
        if (it != g_rpc_regs.end()) {
            reg = it->second;
        } else {
            ggml_backend_reg_t rpc = ggml_backend_reg_by_name("RPC");
            if (rpc == nullptr) throw NativeError("UNSUPPORTED", "this build of hearth has no RPC backend");
            using add_server_t = ggml_backend_reg_t (*)(const char *);
            auto add_server =
                reinterpret_cast<add_server_t>(ggml_backend_reg_get_proc_address(rpc, "ggml_backend_rpc_add_server"));
            if (add_server == nullptr) throw NativeError("UNSUPPORTED", "the RPC backend lacks ggml_backend_rpc_add_server");
            reg = add_server(endpoint_.c_str());
            if (reg == nullptr) {
                throw NativeError("RPC_NO_DEVICES", "RPC server " + endpoint_ + " reports no devices");
            }
            ggml_backend_register(reg);
            g_rpc_regs.emplace(endpoint_, reg);
        }
        for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); i++) {
            devices_.push_back(Describe(ggml_backend_reg_dev_get(reg, i)));
        }
    }

    Napi::Value Result(Napi::Env env) override {
        Napi::Array out = Napi::Array::New(env);
        for (size_t i = 0; i < devices_.size(); i++) out.Set(static_cast<uint32_t>(i), ToJs(env, devices_[i]));
        return out;
    }

  private:
    std::string endpoint_;
    std::vector<DeviceFacts> devices_;
};

// The caller (native/binding.ts) must have probed the endpoint: llama.cpp aborts the process when it
// cannot connect.
Napi::Value AddRpcServer(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) ThrowJs(env, "INVALID_ARGUMENT", "addRpcServer(endpoint): endpoint must be a string");
    auto * worker = new AddRpcServerWorker(env, info[0].As<Napi::String>().Utf8Value());
    worker->Queue();
    return worker->Promise();
}

// Tensor split: where the server at `from` reaches the one at `to` for the servers' own all-reduce
// (hearth's patch to ggml-rpc, RPC 7.1). Set before the model loads; unset, `to` itself.
Napi::Value RpcPeerAddress(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsString()) {
        ThrowJs(env, "INVALID_ARGUMENT", "rpcPeerAddress(from, to, address): three strings");
    }
    ggml_backend_reg_t rpc = ggml_backend_reg_by_name("RPC");
    if (rpc == nullptr) ThrowJs(env, "UNSUPPORTED", "this build of hearth has no RPC backend");
    using set_peer_address_t = void (*)(const char *, const char *, const char *);
    auto set_peer_address = reinterpret_cast<set_peer_address_t>(ggml_backend_reg_get_proc_address(rpc, "ggml_backend_rpc_set_peer_address"));
    if (set_peer_address == nullptr) ThrowJs(env, "UNSUPPORTED", "this build's RPC backend has no server-to-server reduction (hearth's patch to ggml-rpc is missing)");
    set_peer_address(info[0].As<Napi::String>().Utf8Value().c_str(), info[1].As<Napi::String>().Utf8Value().c_str(), info[2].As<Napi::String>().Utf8Value().c_str());
    return env.Undefined();
}

// --- GGUF header -------------------------------------------------------------------------------------

struct GgufValue {
    enum Kind { NUMBER, BIGINT, STRING, BOOL, ARRAY } kind = NUMBER;
    double number = 0;
    int64_t bigint = 0;
    bool is_unsigned = false;
    std::string text;
    bool boolean = false;
    std::string array_type;
    size_t array_length = 0;
    std::vector<GgufValue> items;  // scalar arrays up to kMaxArrayItems
};

struct GgufTensor {
    std::string name, type;
    std::vector<int64_t> shape;
    size_t bytes = 0;
    size_t offset = 0;
};

constexpr size_t kMaxArrayItems = 1024;  // token tables are summarised, never copied

GgufValue ReadScalar(const gguf_context * g, int64_t id, gguf_type type, const void * data) {
    GgufValue v;
    switch (type) {
        case GGUF_TYPE_UINT8: v.number = *static_cast<const uint8_t *>(data); break;
        case GGUF_TYPE_INT8: v.number = *static_cast<const int8_t *>(data); break;
        case GGUF_TYPE_UINT16: v.number = *static_cast<const uint16_t *>(data); break;
        case GGUF_TYPE_INT16: v.number = *static_cast<const int16_t *>(data); break;
        case GGUF_TYPE_UINT32: v.number = *static_cast<const uint32_t *>(data); break;
        case GGUF_TYPE_INT32: v.number = *static_cast<const int32_t *>(data); break;
        case GGUF_TYPE_FLOAT32: v.number = *static_cast<const float *>(data); break;
        case GGUF_TYPE_FLOAT64: v.number = *static_cast<const double *>(data); break;
        case GGUF_TYPE_BOOL:
            v.kind = GgufValue::BOOL;
            v.boolean = *static_cast<const int8_t *>(data) != 0;
            break;
        case GGUF_TYPE_UINT64:
            v.kind = GgufValue::BIGINT;
            v.is_unsigned = true;
            v.bigint = static_cast<int64_t>(*static_cast<const uint64_t *>(data));
            break;
        case GGUF_TYPE_INT64:
            v.kind = GgufValue::BIGINT;
            v.bigint = *static_cast<const int64_t *>(data);
            break;
        default: break;
    }
    (void) g;
    (void) id;
    return v;
}

size_t ScalarSize(gguf_type type) {
    switch (type) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
        case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
        case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
        default: return 0;
    }
}

class ReadGgufWorker : public PromiseWorker {
  public:
    ReadGgufWorker(Napi::Env env, std::string path) : PromiseWorker(env, "hearth.readGguf"), path_(std::move(path)) {}

  protected:
    void Run() override {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(path_, ec)) {
            throw NativeError("MODEL_NOT_FOUND", "model file not found: " + path_);
        }
        file_bytes_ = std::filesystem::file_size(path_, ec);
        ggml_context * meta = nullptr;
        gguf_init_params params = {/*no_alloc =*/true, /*ctx =*/&meta};
        gguf_context * g = gguf_init_from_file(path_.c_str(), params);
        if (g == nullptr) {
            throw NativeError("MODEL_INVALID", "not a valid GGUF file (bad magic, version or truncated header): " + path_);
        }
        version_ = gguf_get_version(g);
        alignment_ = gguf_get_alignment(g);
        data_offset_ = gguf_get_data_offset(g);
        for (int64_t i = 0; i < gguf_get_n_kv(g); i++) {
            std::string key = gguf_get_key(g, i);
            gguf_type type = gguf_get_kv_type(g, i);
            GgufValue v;
            if (type == GGUF_TYPE_STRING) {
                v.kind = GgufValue::STRING;
                v.text = gguf_get_val_str(g, i);
            } else if (type == GGUF_TYPE_ARRAY) {
                v.kind = GgufValue::ARRAY;
                gguf_type at = gguf_get_arr_type(g, i);
                v.array_type = gguf_type_name(at);
                v.array_length = gguf_get_arr_n(g, i);
                if (v.array_length <= kMaxArrayItems) {
                    for (size_t j = 0; j < v.array_length; j++) {
                        if (at == GGUF_TYPE_STRING) {
                            GgufValue s;
                            s.kind = GgufValue::STRING;
                            s.text = gguf_get_arr_str(g, i, j);
                            v.items.push_back(std::move(s));
                        } else if (ScalarSize(at) > 0) {
                            const char * base = static_cast<const char *>(gguf_get_arr_data(g, i));
                            v.items.push_back(ReadScalar(g, i, at, base + j * ScalarSize(at)));
                        }
                    }
                }
            } else {
                v = ReadScalar(g, i, type, gguf_get_val_data(g, i));
            }
            kv_.emplace_back(std::move(key), std::move(v));
        }
        for (int64_t i = 0; i < gguf_get_n_tensors(g); i++) {
            GgufTensor t;
            t.name = gguf_get_tensor_name(g, i);
            ggml_type type = gguf_get_tensor_type(g, i);
            t.type = ggml_type_name(type);
            t.offset = gguf_get_tensor_offset(g, i);
            ggml_tensor * tensor = ggml_get_tensor(meta, t.name.c_str());
            int n_dims = tensor ? ggml_n_dims(tensor) : GGML_MAX_DIMS;
            const int64_t * ne = gguf_get_tensor_ne(g, i);
            for (int d = 0; d < n_dims; d++) t.shape.push_back(ne[d]);
            t.bytes = gguf_get_tensor_size(g, i);
            if (data_offset_ + t.offset + t.bytes > file_bytes_) {
                gguf_free(g);
                ggml_free(meta);
                throw NativeError("MODEL_INVALID", "GGUF file is truncated: tensor '" + t.name + "' ends past the end of " + path_);
            }
            tensors_.push_back(std::move(t));
        }
        gguf_free(g);
        ggml_free(meta);
    }

    static Napi::Value ValueToJs(Napi::Env env, const GgufValue & v) {
        switch (v.kind) {
            case GgufValue::NUMBER: return Napi::Number::New(env, v.number);
            case GgufValue::BIGINT:
                return v.is_unsigned ? Napi::BigInt::New(env, static_cast<uint64_t>(v.bigint)) : Napi::BigInt::New(env, v.bigint);
            case GgufValue::STRING: return Napi::String::New(env, v.text);
            case GgufValue::BOOL: return Napi::Boolean::New(env, v.boolean);
            case GgufValue::ARRAY: {
                Napi::Object o = Napi::Object::New(env);
                o.Set("type", "array");
                o.Set("itemType", v.array_type);
                o.Set("length", Napi::Number::New(env, static_cast<double>(v.array_length)));
                if (v.array_length <= kMaxArrayItems) {
                    Napi::Array items = Napi::Array::New(env, v.items.size());
                    for (size_t i = 0; i < v.items.size(); i++) items.Set(static_cast<uint32_t>(i), ValueToJs(env, v.items[i]));
                    o.Set("items", items);
                } else {
                    o.Set("items", env.Null());
                }
                return o;
            }
        }
        return env.Null();
    }

    Napi::Value Result(Napi::Env env) override {
        Napi::Object o = Napi::Object::New(env);
        o.Set("path", path_);
        o.Set("fileBytes", Napi::Number::New(env, static_cast<double>(file_bytes_)));
        o.Set("version", Napi::Number::New(env, version_));
        o.Set("alignment", Napi::Number::New(env, static_cast<double>(alignment_)));
        o.Set("dataOffset", Napi::Number::New(env, static_cast<double>(data_offset_)));
        Napi::Object meta = Napi::Object::New(env);
        for (const auto & [k, v] : kv_) meta.Set(k, ValueToJs(env, v));
        o.Set("metadata", meta);
        Napi::Array tensors = Napi::Array::New(env, tensors_.size());
        for (size_t i = 0; i < tensors_.size(); i++) {
            const GgufTensor & t = tensors_[i];
            Napi::Object to = Napi::Object::New(env);
            to.Set("name", t.name);
            to.Set("type", t.type);
            Napi::Array shape = Napi::Array::New(env, t.shape.size());
            for (size_t d = 0; d < t.shape.size(); d++) shape.Set(static_cast<uint32_t>(d), Napi::Number::New(env, static_cast<double>(t.shape[d])));
            to.Set("shape", shape);
            to.Set("bytes", Napi::Number::New(env, static_cast<double>(t.bytes)));
            to.Set("offset", Napi::Number::New(env, static_cast<double>(t.offset)));
            tensors.Set(static_cast<uint32_t>(i), to);
        }
        o.Set("tensors", tensors);
        return o;
    }

  private:
    std::string path_;
    size_t file_bytes_ = 0, alignment_ = 0, data_offset_ = 0;
    uint32_t version_ = 0;
    std::vector<std::pair<std::string, GgufValue>> kv_;
    std::vector<GgufTensor> tensors_;
};

Napi::Value ReadGguf(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) ThrowJs(env, "INVALID_ARGUMENT", "readGguf(path): path must be a string");
    auto * worker = new ReadGgufWorker(env, info[0].As<Napi::String>().Utf8Value());
    worker->Queue();
    return worker->Promise();
}

}  // namespace

void InitBackend(Napi::Env env, Napi::Object exports) {
    exports.Set("systemInfo", Napi::Function::New(env, SystemInfo, "systemInfo"));
    exports.Set("listDevices", Napi::Function::New(env, ListDevices, "listDevices"));
    exports.Set("addRpcServer", Napi::Function::New(env, AddRpcServer, "addRpcServer"));
    exports.Set("rpcPeerAddress", Napi::Function::New(env, RpcPeerAddress, "rpcPeerAddress"));
    exports.Set("readGguf", Napi::Function::New(env, ReadGguf, "readGguf"));
}

}  // namespace hearth
