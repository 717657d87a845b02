"""The ``watch`` component: the published tree's changes as a person made them, and its local edits.

``inotify`` is the kernel interface, ``tree`` the tree's index and the classification of changes,
``watcher`` the component.
"""

from sidecar.watch.watcher import Watcher

__all__ = ["Watcher"]
