"""The shared test helpers live in tests/conftest.py; this name stays importable for tests written against it."""

from tests.conftest import FIXTURES, ROOT, init, load_config, random_inputs, run_on_cpu_devices  # pylint: disable=unused-import
