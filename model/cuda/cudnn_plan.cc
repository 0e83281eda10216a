// ConvPlan: a convolution direction planned with cuDNN's graph (backend) API, the current one — the
// descriptor API (cudnnConvolutionForward, cudnnFind*) is deprecated in cuDNN 9 (model/cuda/README.md).
// Engines come from heuristics mode A (then the fallback list); deterministic engines are preferred,
// so repeated runs give the same bits, and a non-deterministic one is taken only when no other runs.
#include "model/cuda/cudnn_plan.h"

#include <algorithm>
#include <array>

#include "model/cuda/cuda_check.h"

namespace sx::model::cuda {

// ---- Descriptor ------------------------------------------------------------------------------------

StatusOr<Descriptor> Descriptor::make(cudnnBackendDescriptorType_t type) {
  Descriptor d;
  const cudnnStatus_t st = cudnnBackendCreateDescriptor(type, &d.d_);
  if (st != CUDNN_STATUS_SUCCESS)
    return Status::internal(cudnn_error("cudnnBackendCreateDescriptor(" + std::to_string(int(type)) + ")", st));
  return d;
}

Descriptor::~Descriptor() {
  if (d_ != nullptr) cudnnBackendDestroyDescriptor(d_);
}

Descriptor& Descriptor::operator=(Descriptor&& o) noexcept {
  if (this != &o) {
    if (d_ != nullptr) cudnnBackendDestroyDescriptor(d_);
    d_ = o.d_;
    o.d_ = nullptr;
  }
  return *this;
}

Status Descriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                       const void* values, const char* what) {
  const cudnnStatus_t st = cudnnBackendSetAttribute(d_, name, type, count, values);
  if (st != CUDNN_STATUS_SUCCESS) return Status::internal(cudnn_error(std::string("setting ") + what, st));
  return Status::ok();
}

Status Descriptor::finalize(const char* what) {
  const cudnnStatus_t st = cudnnBackendFinalize(d_);
  if (st != CUDNN_STATUS_SUCCESS) return Status::internal(cudnn_error(std::string("finalizing ") + what, st));
  return Status::ok();
}

// ---- shapes -------------------------------------------------------------------------------------------

std::string ConvShape::to_string() const {
  return "(" + std::to_string(n) + ", " + std::to_string(c) + ", " + std::to_string(h) + ", " + std::to_string(w) +
         ") -> (" + std::to_string(n) + ", " + std::to_string(k) + ", " + std::to_string(p) + ", " +
         std::to_string(q) + ") kernel " + std::to_string(r) + "x" + std::to_string(s) + " stride " +
         std::to_string(stride) + " pad " + std::to_string(pad) + " groups " + std::to_string(groups);
}

const char* direction_name(ConvDirection d) {
  switch (d) {
    case ConvDirection::kForward: return "forward";
    case ConvDirection::kBackwardData: return "backward-data";
    case ConvDirection::kBackwardFilter: return "backward-filter";
  }
  return "?";
}

namespace {

constexpr int64_t kUidX = 1, kUidW = 2, kUidY = 3;

// A 4-D tensor given in (N, C, H, W) order with channels-last strides.
StatusOr<Descriptor> nhwc_tensor(int64_t uid, cudnnDataType_t type, int64_t n, int64_t c, int64_t h, int64_t w) {
  SX_ASSIGN_OR_RETURN(Descriptor t, Descriptor::make(CUDNN_BACKEND_TENSOR_DESCRIPTOR));
  const std::array<int64_t, 4> dims = {n, c, h, w}, strides = {h * w * c, 1, w * c, c};
  const int64_t alignment = 16;
  SX_TRY(t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor data type"));
  SX_TRY(t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "tensor dims"));
  SX_TRY(t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "tensor strides"));
  SX_TRY(t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid"));
  SX_TRY(t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "tensor alignment"));
  SX_TRY(t.finalize("tensor descriptor"));
  return t;
}

StatusOr<Descriptor> conv_descriptor(const ConvShape& s) {
  SX_ASSIGN_OR_RETURN(Descriptor d, Descriptor::make(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR));
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;  // what deep-learning frameworks call convolution
  const int64_t dims = 2;
  const std::array<int64_t, 2> dilation = {1, 1}, stride = {s.stride, s.stride}, pad = {s.pad, s.pad};
  SX_TRY(d.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute, "conv compute type"));
  SX_TRY(d.set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode, "conv mode"));
  SX_TRY(d.set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims, "conv spatial dims"));
  SX_TRY(d.set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dilation.data(), "conv dilations"));
  SX_TRY(d.set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride.data(), "conv strides"));
  SX_TRY(d.set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad.data(), "conv pre-paddings"));
  SX_TRY(d.set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad.data(), "conv post-paddings"));
  SX_TRY(d.finalize("convolution descriptor"));
  return d;
}

struct OpAttrs {
  cudnnBackendDescriptorType_t type;
  cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
};

OpAttrs op_attrs(ConvDirection dir) {
  switch (dir) {
    case ConvDirection::kBackwardData:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA};
    case ConvDirection::kBackwardFilter:
      return {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
              CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA};
    case ConvDirection::kForward: break;
  }
  return {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
          CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
          CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
          CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA};
}

// The numerical notes of an engine config's engine.
StatusOr<std::vector<cudnnBackendNumericalNote_t>> numerical_notes(const Descriptor& cfg, int64_t* global_index) {
  SX_ASSIGN_OR_RETURN(Descriptor engine, Descriptor::make(CUDNN_BACKEND_ENGINE_DESCRIPTOR));
  cudnnBackendDescriptor_t raw = engine.get();
  int64_t got = 0;
  cudnnStatus_t st =
      cudnnBackendGetAttribute(cfg.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &raw);
  if (st != CUDNN_STATUS_SUCCESS) return Status::internal(cudnn_error("getting the engine of an engine config", st));
  std::array<cudnnBackendNumericalNote_t, CUDNN_NUMERICAL_NOTE_TYPE_COUNT> notes{};
  st = cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                int64_t(notes.size()), &got, notes.data());
  if (st != CUDNN_STATUS_SUCCESS) return Status::internal(cudnn_error("getting an engine's numerical notes", st));
  st = cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &got, global_index);
  if (st != CUDNN_STATUS_SUCCESS) *global_index = -1;
  return std::vector<cudnnBackendNumericalNote_t>(notes.begin(), notes.begin() + std::min<int64_t>(got, notes.size()));
}

// Engine configs for the graph from heuristics in `mode`, best first.
StatusOr<std::vector<Descriptor>> engine_configs(const Descriptor& graph, cudnnBackendHeurMode_t mode,
                                                 std::vector<Descriptor>& keep) {
  SX_ASSIGN_OR_RETURN(Descriptor heur, Descriptor::make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR));
  SX_TRY(heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph, "heuristics graph"));
  SX_TRY(heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode"));
  SX_TRY(heur.finalize("engine heuristics"));
  int64_t count = 0;
  cudnnStatus_t st =
      cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr);
  if (st != CUDNN_STATUS_SUCCESS) return Status::internal(cudnn_error("counting heuristics results", st));
  std::vector<Descriptor> cfgs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    SX_ASSIGN_OR_RETURN(Descriptor c, Descriptor::make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    raw.push_back(c.get());
    cfgs.push_back(std::move(c));
  }
  int64_t got = 0;
  if (count > 0) {
    st = cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                  raw.data());
    if (st != CUDNN_STATUS_SUCCESS) return Status::internal(cudnn_error("getting heuristics results", st));
  }
  cfgs.resize(size_t(std::min(got, count)));
  keep.push_back(std::move(heur));
  return cfgs;
}

}  // namespace

StatusOr<ConvPlan> ConvPlan::build(cudnnHandle_t handle, ConvDirection dir, const ConvShape& s, cudnnDataType_t io) {
  const std::string what = std::string("cuDNN conv ") + direction_name(dir) + " " + s.to_string();
  ConvPlan plan;
  plan.dir_ = dir;
  auto fail = [&](const Status& st) { return st.with_context(what); };

  auto x = nhwc_tensor(kUidX, io, s.n, s.c, s.h, s.w);
  auto w = nhwc_tensor(kUidW, io, s.k, s.c / s.groups, s.r, s.s);  // groups: cuDNN infers them from C / (C/G)
  auto y = nhwc_tensor(kUidY, io, s.n, s.k, s.p, s.q);
  auto conv = conv_descriptor(s);
  for (const Status& st : {x.status(), w.status(), y.status(), conv.status()})
    if (!st.is_ok()) return fail(st);

  const OpAttrs a = op_attrs(dir);
  auto op = Descriptor::make(a.type);
  if (!op.is_ok()) return fail(op.status());
  const float alpha = 1.f, beta = 0.f;
  for (const Status& st : {op->set(a.x, *x, "conv x"), op->set(a.w, *w, "conv w"), op->set(a.y, *y, "conv y"),
                           op->set(a.conv, *conv, "conv descriptor"),
                           op->set(a.alpha, CUDNN_TYPE_FLOAT, 1, &alpha, "conv alpha"),
                           op->set(a.beta, CUDNN_TYPE_FLOAT, 1, &beta, "conv beta"), op->finalize("conv operation")})
    if (!st.is_ok()) return fail(st);

  auto graph = Descriptor::make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  if (!graph.is_ok()) return fail(graph.status());
  cudnnBackendDescriptor_t op_raw = op->get();
  for (const Status& st : {graph->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op_raw, "graph ops"),
                           graph->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "graph handle"),
                           graph->finalize("operation graph")})
    if (!st.is_ok()) return fail(st);

  // Heuristics' order, deterministic engines first; the first config that finalizes into a plan wins.
  int tried = 0;
  Status last = Status::internal("cuDNN heuristics returned no engine");
  for (const cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    auto cfgs = engine_configs(*graph, mode, plan.parts_);
    if (!cfgs.is_ok()) {
      last = cfgs.status();
      continue;
    }
    for (const bool want_deterministic : {true, false}) {
      for (Descriptor& cfg : *cfgs) {
        if (cfg.get() == nullptr) continue;  // taken by an earlier pass
        int64_t index = -1;
        auto notes = numerical_notes(cfg, &index);
        if (!notes.is_ok()) continue;
        const bool nondeterministic =
            std::find(notes->begin(), notes->end(), CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) != notes->end();
        if (want_deterministic == nondeterministic) continue;
        ++tried;
        auto p = Descriptor::make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        if (!p.is_ok()) return fail(p.status());
        Status st = p->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "plan handle");
        if (st.is_ok()) st = p->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfg, "plan engine config");
        if (st.is_ok()) st = p->finalize("execution plan");
        if (!st.is_ok()) {
          last = st;
          continue;
        }
        int64_t got = 0;
        const cudnnStatus_t ws = cudnnBackendGetAttribute(p->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                          CUDNN_TYPE_INT64, 1, &got, &plan.workspace_bytes_);
        if (ws != CUDNN_STATUS_SUCCESS) return fail(Status::internal(cudnn_error("getting the workspace size", ws)));
        const bool tensor_cores =
            std::find(notes->begin(), notes->end(), CUDNN_NUMERICAL_NOTE_TENSOR_CORE) != notes->end();
        plan.description_ = "engine " + std::to_string(index) + (nondeterministic ? " (non-deterministic" : " (deterministic") +
                            (tensor_cores ? ", tensor cores)" : ")");
        plan.plan_ = std::move(*p);
        plan.parts_.push_back(std::move(cfg));
        for (auto* d : {&*x, &*w, &*y, &*conv, &*op, &*graph}) plan.parts_.push_back(std::move(*d));
        return plan;
      }
    }
  }
  return fail(Status::unimplemented("no cuDNN engine runs it (" + std::to_string(tried) +
                                    " engine configs tried; last: " + last.message() + ")"));
}

Status ConvPlan::execute(cudnnHandle_t handle, void* x_or_dx, void* w_or_dw, void* y_or_dy, void* workspace) const {
  SX_ASSIGN_OR_RETURN(Descriptor pack, Descriptor::make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR));
  const std::array<int64_t, 3> uids = {kUidX, kUidW, kUidY};
  std::array<void*, 3> ptrs = {x_or_dx, w_or_dw, y_or_dy};
  SX_TRY(pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids.data(), "variant pack uids"));
  SX_TRY(pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs.data(), "variant pack pointers"));
  SX_TRY(pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace, "variant pack workspace"));
  SX_TRY(pack.finalize("variant pack"));
  SX_CUDNN(cudnnBackendExecute(handle, plan_.get(), pack.get()));
  return Status::ok();
}

}  // namespace sx::model::cuda
