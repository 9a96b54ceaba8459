// Precompiled for every target: the heavy, stable headers only.
#pragma once
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <map>
#include <string>
#include <vector>
