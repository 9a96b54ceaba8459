// ADE20K (SceneParsing, 150 classes) in its release layout, ADEChallengeData2016/{images,annotations}/
// {training,validation}/<name>.{jpg,png}: an image and its per-pixel class map per sample. Other sets in the same
// layout (the Fashion-MNIST scenes of scenes.h) add a classes.txt.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nepa/data/dataset.h"

namespace nepa {

// The 150 class names in label order (the dataset's objectInfo150, as mmseg lists them).
const std::vector<std::string>& ade20k_class_names();

// `root` is the ADEChallengeData2016 folder; `split` training | validation (train | val are accepted too). Every
// image must have its annotation (DataError naming the first missing one and the count). With
// `reduce_zero_label` (mmseg's ADE20K setting), annotation 0 ("other") becomes 255 (ignored) and k becomes k - 1.
// Other sets in this layout name their classes in <root>/classes.txt, one per line in the order of the labels as
// served (after reduce_zero_label when set; blank lines and surrounding spaces are dropped; an empty list is a
// DataError naming the file); without it the classes are the 150 of ADE20K. A label at or beyond the class count
// is a DataError naming the annotation.
std::shared_ptr<Dataset> make_ade20k(const std::string& root, const std::string& split, bool reduce_zero_label);

}  // namespace nepa
