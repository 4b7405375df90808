"""What every service needs, built once from the settings and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field

from dashtune.catalog import Catalog
from dashtune.config import Settings
from dashtune.domain.clock import utcnow
from dashtune.services.wakeup import Wakeup
from dashtune.store.blobs import BlobStore
from dashtune.store.db import Database, migrate

__all__ = ["Runtime", "utcnow"]


@dataclass
class Runtime:
    settings: Settings
    db: Database
    blobs: BlobStore
    catalog: Catalog
    # The scheduler of this process waits on it; services notify it when there is work.
    wakeup: Wakeup = field(default_factory=Wakeup)

    @classmethod
    def open(cls, settings: Settings, *, run_migrations: bool = True) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if run_migrations:
            migrate(settings.database)
        from dashtune.services import webhook_outbox  # imports this module

        webhook_outbox.install()
        return cls(
            settings=settings,
            db=Database(settings.database),
            blobs=BlobStore(settings.blob_dir),
            catalog=Catalog.load(settings.catalog_path),
        )

    def close(self) -> None:
        self.db.dispose()
