"""End to end: the real `saetui` console script in a real terminal (tmux), read off the screen."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")


class Terminal:
    def __init__(self, command: str, width: int, height: int) -> None:
        self.name = f"saetui-test-{uuid.uuid4().hex[:8]}"
        # Keep the pane open after exit so the exit status can be read.
        wrapped = f"{command}; echo SAETUI-EXIT=$?; sleep 30"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), wrapped],
            check=True,
        )

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True).stdout

    def wait_for(self, text: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{text!r} never appeared; screen was:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def _saetui() -> str:
    exe = shutil.which("saetui")
    return shlex.quote(exe) if exe else f"{shlex.quote(sys.executable)} -m saetui"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_real_terminal_session(tiny_setup, tmp_path, size):
    env = f"SAETUI_CACHE_DIR={shlex.quote(str(tmp_path / 'cache'))} SAETUI_DATA_DIR={shlex.quote(str(tmp_path / 'data'))}"
    cmd = f"{env} {_saetui()} {shlex.quote(tiny_setup['sae'])} --dataset {shlex.quote(tiny_setup['dataset'])}"
    term = Terminal(cmd, *size)
    try:
        screen = term.wait_for("SAE 64->256 k=8")
        assert "L1/mlp" in screen
        assert "1 Report" in screen and "4 Registry" in screen and "q quit" in screen  # the screen strip
        assert "d Definitions" in screen  # the footer (the palette's key shows on terminals 100 wide)
        for key, word in (("2", "Feature"), ("3", "Probe"), ("4", "Registry"), ("1", "Report")):
            term.keys("Escape")
            time.sleep(0.3)  # an escape followed at once by a key reads as alt+key
            term.keys(key)
            term.wait_for(f"saetui · {word}", timeout=20)
        term.keys("?")
        term.wait_for("Keys on the")
        term.keys("Escape")
        time.sleep(0.3)
        term.keys("q")
        screen = term.wait_for("SAETUI-EXIT=")
        assert "SAETUI-EXIT=0" in screen
        assert "Traceback" not in screen
    finally:
        term.close()


def test_bad_sae_in_a_real_terminal(tmp_path):
    term = Terminal(f"{_saetui()} {shlex.quote(str(tmp_path / 'missing.mlx'))}", 80, 24)
    try:
        screen = term.wait_for("SAETUI-EXIT=")
        assert "SAETUI-EXIT=2" in screen and "saetui: error: SAE not found" in screen
    finally:
        term.close()
