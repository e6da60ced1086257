// `ggml-rpc-server --hearth-calibrate`: how fast each device streams weights through a decode-shaped
// graph, measured by the same executable, build, device and thread count that will serve the layers.
//
// A single-token decode step is a chain of matrix-vector products whose time is set by how fast the
// device reads (and, for quantized weights, unpacks) the weights, so the figure is bytes of weights per
// second, measured for F16, Q8_0 and Q4_K weights: a device's speed differs by type, and differently
// on a CPU than on a GPU. Each type's matrices total 256 MiB, beyond any cache, and each type runs for
// its share of HEARTH_CALIBRATE_MS (default 2000) of wall time, over several scheduler periods, so a
// CPU quota (cgroup cfs_quota) shows in the figure as it will in serving.
//
// Output: one JSON line per device on stdout: {"device","bytes_per_second" (F16),"by_type":{"f16",
// "q8_0","q4_k"},"seconds","iterations","threads"}.
#include "calibrate.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace {

constexpr int64_t kRows = 8192;
constexpr int64_t kCols = 2048;  // a multiple of every block size (Q4_K: 256)
constexpr size_t kTotalBytes = 256u << 20;  // per type: far beyond any L3 cache

struct Result {
    double bytes_per_second = 0;
    double seconds = 0;
    int iterations = 0;
    std::string error;
};

struct TypeRun {
    ggml_type type;
    const char * key;
    double share;  // of the calibration time
};

const TypeRun kTypes[] = {{GGML_TYPE_F16, "f16", 0.5}, {GGML_TYPE_Q8_0, "q8_0", 0.25}, {GGML_TYPE_Q4_K, "q4_k", 0.25}};

// An even count of matrices, so that the alternating shapes end where they started.
int matrices_of(ggml_type type) {
    const size_t matrix_bytes = ggml_row_size(type, kCols) * kRows;
    return (int) (((kTotalBytes + matrix_bytes - 1) / matrix_bytes + 1) / 2 * 2);
}

// Fills the weights with small finite values (the speed of a product must not depend on special
// numbers), quantized by ggml itself: 64 rows of each shape, repeated (rows are independent in every
// ggml type). A host buffer is written in place; a device buffer through ggml_backend_tensor_set.
void fill_weights(const std::vector<ggml_tensor *> & weights, ggml_type type, bool host) {
    constexpr int64_t kTileRows = 64;
    std::vector<float> values(kTileRows * kRows);
    for (size_t i = 0; i < values.size(); i++) values[i] = ((int) (i * 2654435761u % 2001) - 1000) * 1e-5f;
    std::vector<uint8_t> tile;
    std::vector<uint8_t> staging;
    for (int shape = 0; shape < 2; shape++) {
        ggml_tensor * first = weights[shape];
        const size_t row = ggml_row_size(type, first->ne[0]);
        tile.resize(row * kTileRows);
        ggml_quantize_chunk(type, values.data(), tile.data(), 0, kTileRows, first->ne[0], nullptr);
        if (!host) {
            staging.resize(ggml_nbytes(first));
            for (int64_t r = 0; r < first->ne[1]; r += kTileRows) std::memcpy(staging.data() + r * row, tile.data(), row * kTileRows);
        }
        for (size_t i = shape; i < weights.size(); i += 2) {
            if (host) {
                auto * dst = static_cast<uint8_t *>(weights[i]->data);
                for (int64_t r = 0; r < first->ne[1]; r += kTileRows) std::memcpy(dst + r * row, tile.data(), row * kTileRows);
            } else {
                ggml_backend_tensor_set(weights[i], staging.data(), 0, ggml_nbytes(weights[i]));
            }
        }
    }
}

// Runs one type's chain in `buffer` (reused from type to type, so its pages are touched once).
Result run_type(ggml_backend_t backend, ggml_backend_buffer_t buffer, ggml_type type, double min_seconds) {
    Result r;
    const int n = matrices_of(type);
    ggml_init_params params = {ggml_tensor_overhead() * (n * 2 + 8) + ggml_graph_overhead(), nullptr, true};
    ggml_context * ctx = ggml_init(params);
    std::vector<ggml_tensor *> weights;
    for (int i = 0; i < n; i++) {
        // Alternate the shapes so that the chain stays a vector: [cols→rows] then [rows→cols].
        weights.push_back(i % 2 == 0 ? ggml_new_tensor_2d(ctx, type, kCols, kRows) : ggml_new_tensor_2d(ctx, type, kRows, kCols));
    }
    ggml_tensor * x = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, kCols);
    ggml_tallocr talloc = ggml_tallocr_new(buffer);
    for (auto * w : weights) {
        if (ggml_tallocr_alloc(&talloc, w) != GGML_STATUS_SUCCESS) r.error = "cannot place the calibration weights";
    }
    if (r.error.empty() && ggml_tallocr_alloc(&talloc, x) != GGML_STATUS_SUCCESS) r.error = "cannot place the calibration input";
    if (!r.error.empty()) {
        ggml_free(ctx);
        return r;
    }
    fill_weights(weights, type, ggml_backend_buffer_is_host(buffer));
    std::vector<float> xs(kCols, 0.01f);
    ggml_backend_tensor_set(x, xs.data(), 0, ggml_nbytes(x));

    // The graph's own context: its intermediate tensors are placed by the graph allocator.
    ggml_context * gctx = ggml_init(params);
    ggml_tensor * cur = x;
    for (auto * w : weights) cur = ggml_mul_mat(gctx, w, cur);
    ggml_cgraph * graph = ggml_new_graph(gctx);
    ggml_build_forward_expand(graph, cur);
    ggml_gallocr_t galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
    if (!ggml_gallocr_alloc_graph(galloc, graph)) {
        r.error = "cannot allocate the calibration graph";
    } else {
        ggml_backend_graph_compute(backend, graph);  // warm-up: first touch, thread start
        const double bytes = (double) n * ggml_row_size(type, kCols) * kRows;
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
    ggml_free(ctx);
    return r;
}

// Every type on one device: one backend and one weights buffer, sized for the largest type.
std::vector<Result> calibrate_device(ggml_backend_dev_t dev, int n_threads, double min_seconds) {
    std::vector<Result> results;
    ggml_backend_t backend = ggml_backend_dev_init(dev, nullptr);
    if (!backend) {
        results.push_back(Result{0, 0, 0, "cannot initialise the device"});
        return results;
    }
    if (auto reg = ggml_backend_dev_backend_reg(dev)) {
        auto set_threads = (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
        if (set_threads) set_threads(backend, n_threads);
    }
    ggml_backend_buffer_type_t buft = ggml_backend_get_default_buffer_type(backend);
    size_t size = 0;
    for (const auto & t : kTypes) {
        const size_t align = ggml_backend_buft_get_alignment(buft);
        size = std::max(size, (size_t) matrices_of(t.type) * (ggml_row_size(t.type, kCols) * kRows + align) + kCols * sizeof(float) + 2 * align);
    }
    ggml_backend_buffer_t buffer = ggml_backend_buft_alloc_buffer(buft, size);
    if (!buffer) {
        ggml_backend_free(backend);
        results.push_back(Result{0, 0, 0, "cannot allocate the calibration weights"});
        return results;
    }
#ifdef __linux__
    if (ggml_backend_buffer_is_host(buffer)) {
        // Huge pages where the kernel offers them on request: far fewer page faults on first touch.
        const uintptr_t base = (uintptr_t) ggml_backend_buffer_get_base(buffer);
        const uintptr_t huge = 2u << 20;
        const uintptr_t from = (base + huge - 1) & ~(huge - 1);
        if (from < base + size) madvise((void *) from, (base + size - from) & ~(huge - 1), MADV_HUGEPAGE);
    }
#endif
    for (const auto & t : kTypes) {
        results.push_back(run_type(backend, buffer, t.type, min_seconds * t.share));
        if (!results.back().error.empty()) break;
    }
    ggml_backend_buffer_free(buffer);
    ggml_backend_free(backend);
    return results;
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
    double min_seconds = 2.0;
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
        // F16 gets half the time, the two quantized types a quarter each.
        const std::vector<Result> results = calibrate_device(dev, n_threads, min_seconds);
        std::string by_type;
        std::string error;
        double f16 = 0, seconds = 0;
        int iterations = 0;
        for (size_t i = 0; i < results.size(); i++) {
            const Result & r = results[i];
            if (!r.error.empty()) {
                error = (i < std::size(kTypes) ? std::string(kTypes[i].key) + ": " : "") + r.error;
                break;
            }
            if (kTypes[i].type == GGML_TYPE_F16) f16 = r.bytes_per_second;
            by_type += std::string(by_type.empty() ? "" : ",") + "\"" + kTypes[i].key + "\":" + std::to_string((long long) r.bytes_per_second);
            seconds += r.seconds;
            iterations += r.iterations;
        }
        if (!error.empty()) failures++;
        std::printf("{\"device\":%s,\"bytes_per_second\":%.0f,\"by_type\":{%s},\"seconds\":%.3f,\"iterations\":%d,\"threads\":%d%s%s}\n",
                    json_string(ggml_backend_dev_name(dev)).c_str(), f16, by_type.c_str(), seconds, iterations, n_threads,
                    error.empty() ? "" : ",\"error\":", error.empty() ? "" : json_string(error).c_str());
        std::fflush(stdout);
    }
    return failures == 0 ? 0 : 1;
}
