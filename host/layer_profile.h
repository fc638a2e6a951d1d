// Where a step's time goes: while on, the wall time of each timed scope is added to its layer
// family's total. On the GPU the device is synchronised at both ends of a scope (which slows a
// step down), so the time is the layer's own.
#pragma once
#include <chrono>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "host/device.h"
#include "host/tensor.h"  // synchronize

namespace handgrad {

class LayerProfile {
 public:
  template <size_t N>
  LayerProfile(Device device, const char* const (&families)[N])
      : device_(device), names_(families, families + N), seconds_(N, 0.0) {}
  bool on = false;

  class Scope {
   public:
    Scope(LayerProfile& p, int family) : p_(p.on ? &p : nullptr), family_(family) {
      if (!p_) return;
      HG_ASSERT(family >= 0 && family < static_cast<int>(p_->seconds_.size()), "no layer family ", family);
      synchronize(p_->device_);
      t0_ = std::chrono::steady_clock::now();
    }
    ~Scope() noexcept(false) {
      if (!p_ || std::uncaught_exceptions() > 0) return;
      synchronize(p_->device_);
      p_->seconds_[family_] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    LayerProfile* p_;
    int family_;
    std::chrono::steady_clock::time_point t0_;
  };

  // (family, seconds), in the order the families were named.
  std::vector<std::pair<std::string, double>> seconds() const {
    std::vector<std::pair<std::string, double>> out;
    for (size_t i = 0; i < names_.size(); ++i) out.emplace_back(names_[i], seconds_[i]);
    return out;
  }

 private:
  Device device_;
  std::vector<std::string> names_;
  std::vector<double> seconds_;
};

}  // namespace handgrad
