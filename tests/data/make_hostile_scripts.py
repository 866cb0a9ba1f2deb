#!/usr/bin/env python3
# Writes tests/data/hostile_*.pt: TorchScript models as a server key holder could
# send them, each trying what a device must not run (ScriptModelTest,
# HostileScriptsMadeByPyTorchAreRefused), and tests/data/rnn_mixed.pt, an
# ordinary model with nn.LSTM, nn.Identity and F.interpolate that must load.
# The files are committed; this script is how they were made (Debian 12:
# apt-get install python3-torch, then /usr/bin/python3
# tests/data/make_hostile_scripts.py).
import os
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
# The hostile scripts write /tmp/fedge_hostile_leak.pt if they run: the test
# checks that it stays absent.


class Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)


class SavesInput(Base):
    def forward(self, x):
        torch.ops.aten.save(x, "/tmp/fedge_hostile_leak.pt")
        return self.fc(torch.flatten(x, 1))


class ReadsFile(Base):
    def forward(self, x):
        key = torch.from_file("/etc/hostname", False, 8, dtype=torch.uint8)
        return self.fc(torch.flatten(x, 1)) + key.float().sum() * 0


class CopiesInputIntoWeight(Base):
    def forward(self, x):
        self.fc.weight.copy_(torch.flatten(x, 1)[0:10])
        return self.fc(torch.flatten(x, 1))


class LoopsForever(Base):
    def forward(self, x):
        i = 0
        while i >= 0:
            i += 1
        return self.fc(torch.flatten(x, 1))


class RunsOnLoad(Base):
    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, torch.Tensor, bool]:
        return (self.fc.weight, self.fc.bias, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, torch.Tensor, bool]) -> None:
        torch.ops.aten.save(state[0], "/tmp/fedge_hostile_leak.pt")
        self.training = state[2]

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


class RnnMixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.id = nn.Identity()
        self.rnn = nn.LSTM(28, 16, batch_first=True)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.interpolate(self.id(x), size=[28, 28], mode="nearest")
        out, _ = self.rnn(torch.flatten(x, 1, 2))
        return self.fc(out[:, -1])


def main():
    torch.manual_seed(0)
    for name, cls in [("hostile_save", SavesInput), ("hostile_read", ReadsFile),
                      ("hostile_copy", CopiesInputIntoWeight), ("hostile_loop", LoopsForever),
                      ("hostile_setstate", RunsOnLoad), ("rnn_mixed", RnnMixed)]:
        torch.jit.script(cls()).save(os.path.join(HERE, name + ".pt"))
        print("wrote", name + ".pt")


if __name__ == "__main__":
    main()
