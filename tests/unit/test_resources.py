"""Resource rules: what a job asks, and refusing one that can never fit."""

from __future__ import annotations

import pytest

from dashtune.domain.errors import InvalidParameter
from dashtune.domain.hyperparams import resolve
from dashtune.domain.resources import Inventory, Need, NodeInventory, check_fits
from dashtune.domain.training import TrainingType

LOCAL = Inventory("local", [NodeInventory("host", 2, 4, ["0", "1", "2", "3"])])
RAY = Inventory("ray", [NodeInventory("n1", 4, 2), NodeInventory("n2", 4, 2)])


def test_need_counts_every_worker() -> None:
    need = Need.of({"num_workers": 2, "gpus_per_worker": 3}, threads=1)
    assert (need.gpus, need.cpus) == (6, 2)


def test_local_refuses_more_gpus_than_the_host_has_and_says_what_exists() -> None:
    check_fits(Need(2, 2, 1), LOCAL, local=True)
    with pytest.raises(InvalidParameter, match=r"asks 5 GPU.*has 4 GPU\(s\) \(0,1,2,3\)"):
        check_fits(Need(1, 5, 1), LOCAL, local=True)


def test_ray_needs_each_worker_on_one_node() -> None:
    check_fits(Need(2, 2, 1), RAY, local=False)  # one worker per node
    with pytest.raises(InvalidParameter, match="each worker asks 3 GPU"):
        check_fits(Need(1, 3, 1), RAY, local=False)
    with pytest.raises(InvalidParameter, match="2 node"):
        check_fits(Need(3, 0, 4), RAY, local=False)  # 12 CPUs of 8


def test_resource_hyperparameters_default_and_validate() -> None:
    hp = resolve({}, TrainingType.SFT)
    assert hp["num_workers"] == 1 and hp["gpus_per_worker"] is None  # filled at create
    assert resolve({}, TrainingType.SFT, {"num_workers": 2})["num_workers"] == 2
    job = {"num_workers": 3, "batch_size": 6}  # the job's own value wins over the catalog's
    assert resolve(job, TrainingType.SFT, {"num_workers": 2})["num_workers"] == 3
    with pytest.raises(InvalidParameter, match="must divide among num_workers=3"):
        resolve({"num_workers": 3}, TrainingType.SFT)  # the default global batch is 8
    with pytest.raises(InvalidParameter, match="num_workers"):
        resolve({"num_workers": 0}, TrainingType.SFT)
