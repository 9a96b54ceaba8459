// The small UPerNet of the model tests and of the parity fixture (tests/reference/make_fixtures.py,
// write_upernet_case): width 16 grids, an 8-wide UPerHead, a 6-wide FCN head, 5 classes, no dropout.
#pragma once

#include "nepa/model/upernet.h"

namespace nepa::test {

inline UPerNetOptions small_upernet_options() {
  UPerNetOptions o;
  o.in_channels = 16;
  o.channels = 8;
  o.aux_channels = 6;
  o.num_classes = 5;
  o.dropout = 0.0;
  return o;
}

}  // namespace nepa::test
