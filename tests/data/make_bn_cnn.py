#!/usr/bin/env python3
# Writes tests/data/bn_cnn.pt: a small CNN with BatchNorm and Dropout as
# PyTorch users write one (torch.nn modules, torch.jit.script), for the tests
# that federate it and export it to ONNX. The file is committed; this script
# is how it was made (Debian 12: apt-get install python3-torch, then
# /usr/bin/python3 tests/data/make_bn_cnn.py).
import os

import torch
import torch.nn as nn


class BnCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 7 * 7, 32)
        self.bn3 = nn.BatchNorm1d(32)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        x = self.drop(torch.relu(self.bn3(self.fc1(torch.flatten(x, 1)))))
        return self.fc2(x)


torch.manual_seed(1)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bn_cnn.pt")
torch.jit.script(BnCnn()).save(out)
print(out, os.path.getsize(out), "bytes")
