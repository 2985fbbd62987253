import pytest

from dermcam.config import load_settings


def test_defaults_serve_the_demo_model_locally():
    settings = load_settings({})
    assert settings.model_dir.endswith("model_store/models/demo/1")
    assert settings.allowed_origins == ("*",) and settings.engine == "litert"
    assert settings.signed_url_ttl == 900 and settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.storage_emulator_host is None


def test_environment_overrides():
    settings = load_settings(
        {
            "DERMCAM_MODEL_DIR": "/models/x/2",
            "DERMCAM_BUCKET": "b",
            "DERMCAM_SIGNED_URL_TTL": "60",
            "DERMCAM_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "DERMCAM_MAX_UPLOAD_MB": "2.5",
            "DERMCAM_NUM_THREADS": "2",
            "DERMCAM_ENGINE": "keras",
            "STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443",
        }
    )
    assert settings.model_dir == "/models/x/2" and settings.bucket == "b"
    assert settings.signed_url_ttl == 60
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.max_upload_bytes == int(2.5 * 1024 * 1024) and settings.num_threads == 2
    assert settings.engine == "keras" and settings.storage_emulator_host == "http://127.0.0.1:4443"


@pytest.mark.parametrize("env", [{"DERMCAM_ENGINE": "torch"}, {"DERMCAM_SIGNED_URL_TTL": "soon"}])
def test_bad_values_are_named(env):
    with pytest.raises(ValueError, match=next(iter(env))):
        load_settings(env)
