"""Every environment variable the settings read is documented in the README's table."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_read_from_the_environment_is_in_the_readme():
    source = (ROOT / "churnsite" / "settings.py").read_text()
    names = set(re.findall(r"env_(?:str|bool|int|float|list)\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']", source))
    names |= set(re.findall(r"os\.environ(?:\.get)?[\[(]\s*[\"']([A-Z][A-Z0-9_]+)[\"']", source))
    assert len(names) > 30  # the pattern still finds the settings
    settings_table = (ROOT / "README.md").read_text().split("## Settings", 1)[1]
    missing = sorted(name for name in names if f"`{name}`" not in settings_table)
    assert missing == []
