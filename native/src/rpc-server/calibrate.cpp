// `ggml-rpc-server --hearth-calibrate`: how fast each device streams weights through a decode-shaped
// graph, measured by the same executable, build, device and thread count that will serve the layers.
//
// A single-token decode step is a chain of matrix-vector products whose time is set by how fast the
// device reads the weights, so the figure is bytes of F16 weights per second. The matrices are larger
// than any cache, and the run lasts at least HEARTH_CALIBRATE_MS of wall time over several scheduler
// periods, so a CPU quota (cgroup cfs_quota) shows in the figure as it will in serving.
//
// Output: one JSON line per device on stdout, {"device","bytes_per_second","seconds","iterations"}.
#include "calibrate.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

constexpr int64_t kRows = 8192;
constexpr int64_t kCols = 2048;
constexpr int kMatrices = 8;  // 8 × 32 MiB: far beyond any L3 cache

struct Result {
    double bytes_per_second = 0;
    double seconds = 0;
    int iterations = 0;
    std::string error;
};

Result calibrate_device(ggml_backend_dev_t dev, int n_threads, double min_seconds) {
    Result r;
    ggml_backend_t backend = ggml_backend_dev_init(dev, nullptr);
    if (!backend) {
        r.error = "cannot initialise the device";
        return r;
    }
    if (auto reg = ggml_backend_dev_backend_reg(dev)) {
        auto set_threads = (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
        if (set_threads) set_threads(backend, n_threads);
    }

    ggml_init_params params = {ggml_tensor_overhead() * (kMatrices * 2 + 8) + ggml_graph_overhead(), nullptr, true};
    ggml_context * ctx = ggml_init(params);
    std::vector<ggml_tensor *> weights;
    for (int i = 0; i < kMatrices; i++) {
        // Alternate the shapes so that the chain stays a vector: [cols→rows] then [rows→cols].
        weights.push_back(i % 2 == 0 ? ggml_new_tensor_2d(ctx, GGML_TYPE_F16, kCols, kRows) : ggml_new_tensor_2d(ctx, GGML_TYPE_F16, kRows, kCols));
    }
    ggml_tensor * x = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, kCols);
    ggml_backend_buffer_t buffer = ggml_backend_alloc_ctx_tensors(ctx, backend);
    if (!buffer) {
        r.error = "cannot allocate the calibration weights";
        ggml_free(ctx);
        ggml_backend_free(backend);
        return r;
    }
    {
        // Small finite values: the speed of a product must not depend on special numbers.
        std::vector<ggml_fp16_t> data(kRows * kCols);
        for (size_t i = 0; i < data.size(); i++) data[i] = ggml_fp32_to_fp16(((int) (i * 2654435761u % 2001) - 1000) * 1e-5f);
        for (auto * w : weights) ggml_backend_tensor_set(w, data.data(), 0, ggml_nbytes(w));
        std::vector<float> xs(kCols, 0.01f);
        ggml_backend_tensor_set(x, xs.data(), 0, ggml_nbytes(x));
    }

    // The graph's own context: its intermediate tensors are placed by the graph allocator.
    ggml_init_params gparams = {ggml_tensor_overhead() * (kMatrices * 2 + 8) + ggml_graph_overhead(), nullptr, true};
    ggml_context * gctx = ggml_init(gparams);
    ggml_tensor * cur = x;
    for (auto * w : weights) cur = ggml_mul_mat(gctx, w, cur);
    ggml_cgraph * graph = ggml_new_graph(gctx);
    ggml_build_forward_expand(graph, cur);
    ggml_gallocr_t galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
    if (!ggml_gallocr_alloc_graph(galloc, graph)) {
        r.error = "cannot allocate the calibration graph";
    } else {
        ggml_backend_graph_compute(backend, graph);  // warm-up: first touch, thread start
        const double bytes = (double) kMatrices * kRows * kCols * sizeof(ggml_fp16_t);
        const auto start = std::chrono::steady_clock::now();
        double elapsed = 0;
        while (elapsed < min_seconds || r.iterations < 3) {
            if (ggml_backend_graph_compute(backend, graph) != GGML_STATUS_SUCCESS) {
                r.error = "the calibration graph failed";
                break;
            }
            ggml_backend_synchronize(backend);
            r.iterations++;
            elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        }
        r.seconds = elapsed;
        if (r.error.empty()) r.bytes_per_second = bytes * r.iterations / elapsed;
    }
    ggml_gallocr_free(galloc);
    ggml_free(gctx);
    ggml_backend_buffer_free(buffer);
    ggml_free(ctx);
    ggml_backend_free(backend);
    return r;
}

std::string json_string(const std::string & s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if ((unsigned char) c < 0x20) continue;
        out += c;
    }
    return out + "\"";
}

}  // namespace

int hearth_calibrate_main(int argc, char ** argv) {
    int n_threads = 1;
    std::vector<std::string> names;
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        if ((arg == "-t" || arg == "--threads") && i + 1 < argc) {
            n_threads = std::max(1, std::atoi(argv[++i]));
        } else if ((arg == "-d" || arg == "--device") && i + 1 < argc) {
            std::string list = argv[++i];
            size_t pos = 0;
            while (pos <= list.size()) {
                size_t comma = list.find(',', pos);
                if (comma == std::string::npos) comma = list.size();
                if (comma > pos) names.push_back(list.substr(pos, comma - pos));
                pos = comma + 1;
            }
        }
    }
    double min_seconds = 1.0;
    if (const char * ms = std::getenv("HEARTH_CALIBRATE_MS")) min_seconds = std::max(0.05, std::atof(ms) / 1000.0);

    std::vector<ggml_backend_dev_t> devices;
    if (names.empty()) {
        // The server's own default: every GPU-like device, or the CPU when there is none.
        for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
            auto * dev = ggml_backend_dev_get(i);
            auto type = ggml_backend_dev_type(dev);
            if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) devices.push_back(dev);
        }
        if (devices.empty()) devices.push_back(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU));
    } else {
        for (auto & name : names) {
            auto * dev = ggml_backend_dev_by_name(name.c_str());
            if (!dev) {
                std::fprintf(stderr, "error: unknown device: %s\n", name.c_str());
                return 1;
            }
            devices.push_back(dev);
        }
    }
    int failures = 0;
    for (auto * dev : devices) {
        Result r = calibrate_device(dev, n_threads, min_seconds);
        if (!r.error.empty()) failures++;
        std::printf("{\"device\":%s,\"bytes_per_second\":%.0f,\"seconds\":%.3f,\"iterations\":%d,\"threads\":%d%s%s}\n",
                    json_string(ggml_backend_dev_name(dev)).c_str(), r.bytes_per_second, r.seconds, r.iterations, n_threads,
                    r.error.empty() ? "" : ",\"error\":", r.error.empty() ? "" : json_string(r.error).c_str());
        std::fflush(stdout);
    }
    return failures == 0 ? 0 : 1;
}
