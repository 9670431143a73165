"""ssvif-bench runs each model in its own process and reports latency, rate and memory."""
import json
import subprocess
import sys


def test_bench_compares_two_backends_in_one_run(tmp_path):
    out = tmp_path / 'bench.json'
    res = subprocess.run([sys.executable, '-m', 'ssvif_ros.bench_cli', '--backend', 'identity',
                          '--compare', '', '--compare-backend', 'maxluma', '--runs', '5',
                          '--warmup', '1', '--size', '320x240', '--json', str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert '| identity:identity | 320x240 |' in res.stdout
    assert '| maxluma:maxluma | 320x240 |' in res.stdout
    data = json.loads(out.read_text())
    a, b = data['results']
    for r in (a, b):
        assert r['runs'] == 5 and r['median_ms'] > 0 and r['p99_ms'] >= r['median_ms']
        assert r['peak_rss_mb'] > 10
    ratio = data['ratio_compare_over_model']['median_ms']
    assert abs(ratio - b['median_ms'] / a['median_ms']) < 1e-9


def test_bench_reports_a_bad_model_by_name(tmp_path):
    res = subprocess.run([sys.executable, '-m', 'ssvif_ros.bench_cli', '--model',
                          str(tmp_path / 'nothing'), '--runs', '1'],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert 'nothing' in res.stderr and 'Traceback' not in res.stderr
    res = subprocess.run([sys.executable, '-m', 'ssvif_ros.bench_cli', '--size', '640by480'],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and 'WxH' in res.stderr


def test_bench_paces_calls_at_a_camera_rate(tmp_path):
    out = tmp_path / 'bench.json'
    res = subprocess.run([sys.executable, '-m', 'ssvif_ros.bench_cli', '--backend', 'maxluma',
                          '--runs', '4', '--warmup', '0', '--rate', '30', '--size', '64x48',
                          '--json', str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert '4 timed runs started at 30 Hz' in res.stdout
    (r,) = json.loads(out.read_text())['results']
    assert r['rate_hz'] == 30.0 and r['runs'] == 4
    res = subprocess.run([sys.executable, '-m', 'ssvif_ros.bench_cli', '--rate', '-1'],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and '--rate >= 0' in res.stderr


def bench(*args, timeout=300):
    return subprocess.run([sys.executable, '-m', 'ssvif_ros.bench_cli', *args],
                          capture_output=True, text=True, timeout=timeout)


def test_bench_measures_on_the_device_asked_for(tmp_path):
    out = tmp_path / 'bench.json'
    res = bench('--backend', 'torch', '--device', 'cpu', '--runs', '2', '--warmup', '0',
                '--size', '160x120', '--threads', '1', '--json', str(out))
    assert res.returncode == 0, res.stderr
    (r,) = json.loads(out.read_text())['results']
    assert r['device'] == 'cpu' and r['precision'] == 'fp32'
    assert r['describe'].endswith('(cpu, fp32)') and '| cpu fp32 |' in res.stdout
    res = bench('--backend', 'onnxruntime', '--runs', '1', '--warmup', '0', '--size', '64x48',
                '--json', str(out))
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text())['results'][0]['device'] == 'CPUExecutionProvider'


def test_bench_device_and_precision_errors_are_one_line():
    import torch
    missing = (f'cuda:{torch.cuda.device_count()}' if torch.cuda.is_available() else 'cuda')
    cases = [(('--backend', 'torch', '--device', missing),
              'CUDA device' if torch.cuda.is_available() else 'CUDA is not available'),
             (('--backend', 'torch', '--device', 'gpu0'), '--device must be cpu, cuda or cuda:N'),
             (('--backend', 'torch', '--device', 'cpu', '--precision', 'fp16'),
              'fp16 (autocast) needs a CUDA device'),
             (('--backend', 'onnxruntime', '--precision', 'fp16'),
              'precision fp16 is an option of the torch and tensorrt backends')]
    for args, why in cases:
        res = bench(*args, '--runs', '1', '--warmup', '0', '--size', '64x48')
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and why in lines[0], (args, res.stderr)
