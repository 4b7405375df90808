"""What a job asks of an executor (workers, GPUs, CPUs) and whether it can ever fit.

An `Inventory` is what an executor has: one entry per node (the host itself for the
local executor, each Ray node on a cluster). A job fits when every worker fits on some
node and the job fits in the total; one that can never fit is refused at create.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dashtune.domain.errors import InvalidParameter


@dataclass(frozen=True)
class Need:
    num_workers: int
    gpus_per_worker: int
    cpus_per_worker: int  # torch threads of each worker

    @classmethod
    def of(cls, hyper_parameters: dict[str, Any], threads: int) -> Need:
        return cls(
            num_workers=int(hyper_parameters.get("num_workers") or 1),
            gpus_per_worker=int(hyper_parameters.get("gpus_per_worker") or 0),
            cpus_per_worker=threads,
        )

    @property
    def gpus(self) -> int:
        return self.num_workers * self.gpus_per_worker

    @property
    def cpus(self) -> int:
        return self.num_workers * self.cpus_per_worker


@dataclass(frozen=True)
class NodeInventory:
    name: str  # host name, or Ray node id
    cpus: int
    gpus: int
    devices: list[str] = field(default_factory=list)  # local GPU indices


@dataclass(frozen=True)
class Inventory:
    executor: str
    nodes: list[NodeInventory]

    @property
    def gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    @property
    def cpus(self) -> int:
        return sum(n.cpus for n in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Inventory:
        nodes = [NodeInventory(**n) for n in raw.get("nodes", [])]
        return cls(executor=str(raw.get("executor", "")), nodes=nodes)

    def describe(self) -> str:
        if self.executor == "local":
            n = self.nodes[0] if self.nodes else NodeInventory("this host", 0, 0)
            devices = f" ({','.join(n.devices)})" if n.devices else ""
            return f"the local executor has {n.gpus} GPU(s){devices} on {n.name}"
        per_node = ", ".join(f"{n.cpus} CPU/{n.gpus} GPU" for n in self.nodes)
        return f"the {self.executor} cluster has {len(self.nodes)} node(s): {per_node or 'none'}"


def check_fits(need: Need, inv: Inventory, *, local: bool) -> None:
    """InvalidParameter saying what exists when `need` can never be met by `inv`."""
    asked = (
        f"the job asks {need.gpus} GPU(s) (num_workers={need.num_workers} x "
        f"gpus_per_worker={need.gpus_per_worker})"
    )
    if need.gpus > inv.gpus:
        raise InvalidParameter(f"hyper_parameters: {asked}, but {inv.describe()}.")
    if not local:
        if not any(n.gpus >= need.gpus_per_worker for n in inv.nodes):
            raise InvalidParameter(
                f"hyper_parameters: each worker asks {need.gpus_per_worker} GPU(s) on one "
                f"node, but {inv.describe()}."
            )
        if not any(n.cpus >= need.cpus_per_worker for n in inv.nodes) or need.cpus > inv.cpus:
            raise InvalidParameter(
                f"hyper_parameters: the job asks {need.num_workers} worker(s) of "
                f"{need.cpus_per_worker} CPU(s), but {inv.describe()}."
            )
