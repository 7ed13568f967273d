// What the host-only layout programs of tests/cuda_programs/ share: counted checks that
// print their first 20 failures, and the exit report tests/test_cuda_attention_host.py
// reads ("ok <n> checks", exit 0; or the failure count, exit 1).
#pragma once

#include <cstdio>

static int failures = 0;
static long checks = 0;

static void expect(bool ok, const char* what, int head_dim, int thread, int a, int b) {
  ++checks;
  if (!ok && failures++ < 20) std::printf("FAIL hd%d thread %d: %s (%d, %d)\n", head_dim, thread, what, a, b);
}

static int report() {
  if (failures) {
    std::printf("%d failure(s) of %ld checks\n", failures, checks);
    return 1;
  }
  std::printf("ok %ld checks\n", checks);
  return 0;
}
