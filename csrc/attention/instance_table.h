// The table of compiled instances one attention launch looks in: filled by the generated
// files under instances/ during static initialisation (one thread), read-only after, keyed
// by (head dim, dtype).
#pragma once

#include "common/dtypes.h"

namespace seqops {
namespace attention {

template <class Instance>
struct InstanceTable {
  static constexpr int kCapacity = 32;  // head dims x dtypes, with room to spare
  Instance entries[kCapacity];
  int count = 0;

  // Adds the instance, or replaces the one of its key; false when full.
  bool add(const Instance& instance) {
    for (int i = 0; i < count; ++i) {
      if (entries[i].head_dim == instance.head_dim && entries[i].dtype == instance.dtype) {
        entries[i] = instance;
        return true;
      }
    }
    if (count == kCapacity) return false;
    entries[count++] = instance;
    return true;
  }

  const Instance* find(int head_dim, DType dtype) const {
    for (int i = 0; i < count; ++i) {
      if (entries[i].head_dim == head_dim && entries[i].dtype == dtype) return &entries[i];
    }
    return nullptr;
  }
};

}  // namespace attention
}  // namespace seqops
