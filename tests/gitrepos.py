"""Real git repositories for tests: an upstream work tree plus a bare repository it pushes to."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "upstream", "GIT_AUTHOR_EMAIL": "up@example.invalid",
    "GIT_COMMITTER_NAME": "upstream", "GIT_COMMITTER_EMAIL": "up@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
}


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git for a test fixture; fail loudly."""
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


class Upstream:
    """An upstream scripts repository: ``work`` (where commits are made) pushing to ``bare``."""

    def __init__(self, base: Path, files: dict[str, str] | None = None, branch: str = "main") -> None:
        self.work = base / "upstream-work"
        self.bare = base / "upstream.git"
        self.branch = branch
        git("init", "-q", "-b", branch, str(self.work))
        git("init", "-q", "--bare", "-b", branch, str(self.bare))
        git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=self.bare)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        self.commit(files or default_files(), "initial")

    @property
    def url(self) -> str:
        """file:// URL of the bare repository."""
        return f"file://{self.bare}"

    def write(self, files: dict[str, str | None]) -> None:
        """Write files (None deletes) in the work tree."""
        for rel, content in files.items():
            path = self.work / rel
            if content is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)

    def commit(self, files: dict[str, str | None], message: str = "change", push: bool = True) -> str:
        """Commit files and push; return the new commit id."""
        self.write(files)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        if push:
            git("push", "-q", "--force", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.work)
        return self.head()

    def head(self) -> str:
        """Current commit of the work tree."""
        return git("rev-parse", "HEAD", cwd=self.work)

    def tag(self, name: str) -> None:
        """Annotated tag at HEAD, pushed."""
        git("tag", "-a", "-m", name, name, cwd=self.work)
        git("push", "-q", "origin", name, cwd=self.work)

    def rewrite(self, files: dict[str, str | None]) -> str:
        """Replace the last commit (amend) and force-push: history rewritten."""
        self.write(files)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--amend", "-m", "rewritten", cwd=self.work)
        git("push", "-q", "--force", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.work)
        return self.head()


def default_files(n: int = 6) -> dict[str, str]:
    """A small tree shaped like EdgeLake's deployment-scripts (dotfile included)."""
    files = {
        "node-deployment/main.al": "process !local_scripts/set_params.al\nprocess !local_scripts/local_script.al\n",
        "node-deployment/set_params.al": "set node_name = test-node\n",
        "node-deployment/local_script.al": "# user script\n",
        ".gitignore": "*.log\n",
        "README.md": "deployment scripts\n",
    }
    for i in range(n):
        files[f"sample-code/sample_{i}.al"] = f"# sample {i}\n" + "x" * (i * 37) + "\n"
    return files


def many_files(n: int) -> dict[str, str]:
    """``n`` files spread over folders, for size and speed tests."""
    files = default_files(0)
    for i in range(n - len(files)):
        files[f"dir{i % 17}/sub{i % 5}/script_{i}.al"] = f"# script {i}\n" + f"set x = {i}\n" * 20
    return files


def read_tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (following the link itself, not .git)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames:
            if name == ".git":
                continue
            full = Path(dirpath) / name
            out[full.relative_to(root).as_posix()] = full.read_text(errors="replace")
    return out
