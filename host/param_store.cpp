#include "host/param_store.h"

#include <algorithm>

namespace handgrad {

int64_t ParamStore::add(Kind kind, const std::string& name, const Shape& shape) {
  HG_ASSERT(!params_.defined(), "ParamStore::add after allocate()");
  int64_t& end = kind == Kind::Param ? param_end_ : kind == Kind::Buffer ? buffer_end_ : counter_end_;
  entries_.push_back({kind, name, shape, end});
  end += shape_numel(shape);
  return entries_.back().offset;
}

void ParamStore::allocate(Device device, MemoryTally* host_tally) {
  device_ = device;
  const int64_t params = std::max<int64_t>(param_end_, 1), buffers = std::max<int64_t>(buffer_end_, 1);
  if (device == Device::CPU && host_tally) host_tally->add(sizeof(float) * static_cast<uint64_t>(3 * params + buffers));
  for (Tensor* t : {&params_, &grads_, &velocity_}) *t = Tensor::zeros({params}, device);
  buffers_ = Tensor::zeros({buffers}, device);
  counters_.assign(counter_end_, 0);
  set_trainable([](const Entry&) { return true; });
}

void ParamStore::set_trainable(const std::function<bool(const Entry&)>& trains) {
  trainable_.assign(entries_.size(), false);
  ranges_ = ParamRanges();
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    if (e.kind != Kind::Param || !trains(e)) continue;
    trainable_[i] = true;
    const int64_t b = e.offset, end = b + e.numel();
    ParamRanges& r = ranges_;
    if (r.count > 0 && r.end[r.count - 1] == b) {
      r.end[r.count - 1] = end;
      continue;
    }
    HG_ASSERT(r.count < ParamRanges::kMax, "more than ", ParamRanges::kMax, " trainable ranges");
    r.begin[r.count] = b, r.end[r.count] = end, ++r.count;
  }
}

void ParamStore::init(const std::function<void(const Entry&, int64_t, float*)>& fill) {
  std::vector<float> params(param_end_), buffers(buffer_end_);
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    if (e.kind == Kind::Counter) counters_[e.offset] = 0;
    else fill(e, static_cast<int64_t>(i), (e.kind == Kind::Param ? params.data() : buffers.data()) + e.offset);
  }
  copy_bytes(params_.raw(), device_, params.data(), Device::CPU, sizeof(float) * params.size());
  copy_bytes(buffers_.raw(), device_, buffers.data(), Device::CPU, sizeof(float) * buffers.size());
  zero_bytes(velocity_.raw(), device_, velocity_.nbytes());
}

const ParamStore::Entry* ParamStore::find(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

void ParamStore::load(const StateDict& sd, bool strict, const std::string& model) {
  // Every key checked before anything is copied: a load that fails leaves the model as it was.
  for (const auto& [name, t] : sd.entries) {
    const Entry* e = find(name);
    if (!e) {
      HG_REQUIRE(!strict, "checkpoint key '", name, "' is not a parameter of the ", model);
      continue;
    }
    HG_REQUIRE(t.shape() == e->shape, "checkpoint key '", name, "' has shape ", shape_str(t.shape()),
               ", the model needs ", shape_str(e->shape));
    if (e->kind == Kind::Counter)
      HG_REQUIRE(t.dtype() == DType::I64, "checkpoint key '", name, "' must be an integer");
    else
      HG_REQUIRE(t.dtype() == DType::F32, "checkpoint key '", name, "' must be floating point");
  }
  if (strict)
    for (const Entry& e : entries_) HG_REQUIRE(sd.find(e.name) != nullptr, "checkpoint lacks key '", e.name, "'");
  for (const auto& [name, t] : sd.entries) {
    const Entry* e = find(name);
    if (!e) continue;
    if (e->kind == Kind::Counter) {
      counters_[e->offset] = t.data<int64_t>()[0];
    } else {
      float* dst = e->kind == Kind::Param ? param(e->offset) : buffer(e->offset);
      copy_bytes(dst, device_, t.data<float>(), Device::CPU, sizeof(float) * e->numel());
    }
  }
}

void ParamStore::copy_values(const ParamStore& from) {
  HG_ASSERT(param_end_ == from.param_end_ && buffer_end_ == from.buffer_end_ && counter_end_ == from.counter_end_,
            "ParamStore::copy_values between stores of different layouts");
  copy_bytes(params_.raw(), device_, from.params_.raw(), from.device_, params_.nbytes());
  copy_bytes(buffers_.raw(), device_, from.buffers_.raw(), from.device_, buffers_.nbytes());
  counters_ = from.counters_;
}

StateDict ParamStore::state_dict() const {
  StateDict sd;
  for (const Entry& e : entries_) {
    Tensor t = Tensor::empty(e.shape, Device::CPU, e.kind == Kind::Counter ? DType::I64 : DType::F32);
    if (e.kind == Kind::Counter)
      t.data<int64_t>()[0] = counters_[e.offset];
    else
      copy_bytes(t.raw(), Device::CPU,
                 (e.kind == Kind::Param ? params_ : buffers_).data<float>() + e.offset, device_, t.nbytes());
    sd.add(e.name, std::move(t));
  }
  return sd;
}

StateDict ParamStore::momentum_state() const {
  StateDict sd;
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!trainable_[i]) continue;
    const Entry& e = entries_[i];
    Tensor t = Tensor::empty(e.shape);
    copy_bytes(t.raw(), Device::CPU, velocity_.data<float>() + e.offset, device_, t.nbytes());
    sd.add(e.name, std::move(t));
  }
  return sd;
}

}  // namespace handgrad
