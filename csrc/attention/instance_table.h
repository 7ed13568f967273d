// The table of compiled instances one attention launch looks in: filled by the generated
// files under instances/ during static initialisation (one thread), read-only after, keyed
// by (head dim, dtype, arch): arch 80 runs on every device the build targets, arch 90
// (sm90a: wgmma) only on compute capability 9.0.
#pragma once

#include "common/dtypes.h"

namespace seqops {
namespace attention {

template <class Instance>
struct InstanceTable {
  static constexpr int kCapacity = 32;  // head dims x dtypes x archs, with room to spare
  Instance entries[kCapacity];
  int count = 0;

  // Adds the instance, or replaces the one of its key; false when full.
  bool add(const Instance& instance) {
    for (int i = 0; i < count; ++i) {
      if (entries[i].head_dim == instance.head_dim && entries[i].dtype == instance.dtype &&
          entries[i].arch == instance.arch) {
        entries[i] = instance;
        return true;
      }
    }
    if (count == kCapacity) return false;
    entries[count++] = instance;
    return true;
  }

  const Instance* find(int head_dim, DType dtype, int arch = 80) const {
    for (int i = 0; i < count; ++i) {
      if (entries[i].head_dim == head_dim && entries[i].dtype == dtype && entries[i].arch == arch) return &entries[i];
    }
    return nullptr;
  }

  // The instance a device of this compute capability runs best: its arch's own where the
  // build has one (90 on 9.0), else the sm80 one every target runs.
  const Instance* find_for_device(int head_dim, DType dtype, int compute_capability) const {
    if (compute_capability == 90) {
      if (const Instance* own = find(head_dim, dtype, 90)) return own;
    }
    return find(head_dim, dtype, 80);
  }
};

}  // namespace attention
}  // namespace seqops
