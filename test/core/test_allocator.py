"""The CPU allocator setting: freed activations are reused instead of page-faulted anew.

Each case runs in a fresh interpreter: mallopt is process-wide and cannot be undone.
"""
import json
import os
import subprocess
import sys

import pytest

# A fresh interpreter: one 16 MiB block (the size of a feature map at 256x320), freed, then
# a frame-like round (three 8 MiB blocks live at once, then freed) ten times. Reports the
# [heap] size after each stage and the page faults of each round.
SCRIPT = r"""
import json, resource, torch
from dmnet_core.allocator import reuse_freed_memory

def heap_mb():
    for line in open('/proc/self/maps'):
        if line.rstrip().endswith('[heap]'):
            lo, hi = (int(x, 16) for x in line.split()[0].split('-'))
            return (hi - lo) / 2**20
    return 0.0

applied = reuse_freed_memory()
h0 = heap_mb()
a = torch.ones(4 * 1024 * 1024)
h1 = heap_mb()
del a
h2 = heap_mb()
faults = []
for _ in range(10):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(2 * 1024 * 1024) for _ in range(3)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
print(json.dumps({'applied': applied, 'heap_growth_mb': h1 - h0, 'heap_kept_mb': h2 - h0,
                  'faults': faults}))
"""

glibc = pytest.mark.skipif(not sys.platform.startswith('linux') or os.confstr(
    'CS_GNU_LIBC_VERSION') is None, reason='mallopt thresholds exist only in glibc')


def run(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != 'DMNET_DEFAULT_MALLOC'}
    env.update(env_extra)
    out = subprocess.run([sys.executable, '-c', SCRIPT], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_freed_blocks_are_reused_without_page_faults():
    tuned = run({})
    default = run({'DMNET_DEFAULT_MALLOC': '1'})
    assert tuned['applied'] is True and default['applied'] is False
    # glibc's defaults put a 16 MiB block in an mmap of its own (unmapped again on free);
    # with the setting it comes from the heap, which keeps it once freed.
    assert default['heap_growth_mb'] < 1.0, default
    assert tuned['heap_growth_mb'] > 12.0 and tuned['heap_kept_mb'] > 12.0, tuned
    # Steady state: the frame-like rounds find their pages already mapped.
    pages = 3 * 8 * 1024 * 1024 // os.sysconf('SC_PAGE_SIZE')
    assert max(tuned['faults'][5:]) < pages // 20, tuned


@glibc
def test_load_segmenter_on_cpu_applies_it():
    code = ("from dmnet_core import allocator, load_segmenter\n"
            "load_segmenter(device='cpu', inference_size=(64, 64))\n"
            "print(allocator._applied)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300, check=True,
                         env={k: v for k, v in os.environ.items()
                              if k != 'DMNET_DEFAULT_MALLOC'})
    assert out.stdout.strip().splitlines()[-1] == 'True'
