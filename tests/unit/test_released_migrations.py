"""A migration file never changes once released: a database that ran it refuses to start the version whose file
differs (``MigrationsRefused``). ``released_migrations.sha256`` holds every migration file's checksum, computed as the
runner does, so an edit is caught here rather than at an upgrade."""

from __future__ import annotations

from pathlib import Path

from refundflow_cli import replay_ledger
from refundflow_devstack.service_migrations import SCHEMAS
from refundflow_shared.migrations_runner import MESSAGING_MIGRATIONS, migration_checksum

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = Path(__file__).parent / "released_migrations.sha256"
FOLDERS = [MESSAGING_MIGRATIONS, *SCHEMAS.values(), replay_ledger.MIGRATIONS]


def _on_disk() -> dict[str, str]:
    return {
        path.relative_to(ROOT).as_posix(): migration_checksum(path)
        for folder in FOLDERS
        for path in sorted(folder.glob("*.sql"))
    }


def _manifest() -> dict[str, str]:
    lines = MANIFEST.read_text().splitlines()
    return {path: checksum for checksum, path in (line.split("  ", 1) for line in lines if line.strip())}


def test_no_released_migration_changed_and_every_migration_is_listed() -> None:
    on_disk, released = _on_disk(), _manifest()
    changed = sorted(path for path, checksum in released.items() if on_disk.get(path, checksum) != checksum)
    assert not changed, (
        f"released migrations changed: {', '.join(changed)}. A migration that ran is never edited (databases that ran"
        " it refuse to start this version): put the file back as it was released and write the change as a new"
        " migration."
    )
    removed = sorted(released.keys() - on_disk.keys())
    assert not removed, (
        f"released migrations removed: {', '.join(removed)}. Put them back; one retired on purpose goes into"
        f" RETIRED_MIGRATIONS (migrations_runner.py) and out of {MANIFEST.name}."
    )
    new = sorted(on_disk.keys() - released.keys())
    assert not new, f"new migrations not in {MANIFEST.relative_to(ROOT)}: add these lines to it\n" + "\n".join(
        f"{on_disk[path]}  {path}" for path in new
    )
