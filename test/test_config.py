"""Config dataclasses from YAML: unknown keys fail, overrides apply, every shipped config loads."""
from pathlib import Path

import pytest

from ssvif_train.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_match_the_paper():
    cfg = load_config(None)
    assert (cfg.loss.lambda_int, cfg.loss.lambda_grad, cfg.loss.lambda_ssim,
            cfg.loss.lambda_color) == (20, 20, 10, 20)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs, cfg.train.patience) == \
        (1e-4, 10, 110, 10)
    assert cfg.data.crop == 160 and cfg.model.num_classes == 15 and cfg.model.segformer == 'b3'
    assert cfg.weighting.method == 'gdwa'


def test_unknown_key_is_an_error_naming_it(tmp_path):
    p = tmp_path / 'c.yaml'
    p.write_text('train:\n  epochz: 3\n')
    with pytest.raises(ConfigError, match='train.epochz'):
        load_config(str(p))
    with pytest.raises(ConfigError, match='nosuch'):
        load_config(None, ['nosuch.key=1'])


def test_overrides_parse_yaml_values_and_types_are_checked(tmp_path):
    cfg = load_config(None, ['train.epochs=3', 'train.csc=false', 'model.args={widths: [8, 8, 8]}',
                             'train.val_metrics=EN,SSIM', 'weighting.method=dwa'])
    assert cfg.train.epochs == 3 and cfg.train.csc is False
    assert cfg.model.args == {'widths': [8, 8, 8]} and cfg.train.val_metrics == ['EN', 'SSIM']
    assert load_config(None, ['train.lr=1e-4']).train.lr == 1e-4  # YAML 1.1 reads a string
    assert load_config(None, ['data.thermal_lo=2e3']).data.thermal_lo == 2000.0
    with pytest.raises(ConfigError, match='data.thermal_hi must be a number'):
        load_config(None, ['data.thermal_hi=hot'])
    with pytest.raises(ConfigError, match='train.epochs must be an integer'):
        load_config(None, ['train.epochs=many'])
    with pytest.raises(ConfigError, match='weighting.method must be one of'):
        load_config(None, ['weighting.method=magic'])
    with pytest.raises(ConfigError, match='unknown metric'):
        load_config(None, ['train.val_metrics=[EN, Magic]'])
    with pytest.raises(ConfigError, match='key=value'):
        load_config(None, ['train.epochs'])
    with pytest.raises(ConfigError, match='not found'):
        load_config(str(tmp_path / 'none.yaml'))


@pytest.mark.parametrize('path', sorted((REPO / 'config' / 'train').glob('*.yaml')),
                         ids=lambda p: p.name)
def test_every_shipped_training_config_loads(path):
    cfg = load_config(str(path))
    assert cfg.digest()
