// Files that are either the old version or the complete new one, never a torn mix: write to a temp file
// beside the target, fsync it, rename over the target, fsync the directory.
#pragma once

#include <functional>
#include <string>

namespace nepa {

// `write` receives a FILE* opened for binary writing; throwing from it leaves the target untouched.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write);

void write_text_atomic(const std::string& path, const std::string& text);

// Test seam: called with (temp path, target path) after the temp file is complete and fsynced, just before the
// rename. Tests kill the process here to prove that an interrupted write leaves the previous file intact.
// Empty function = none (the default). Not thread-safe to change while writes are in flight.
void set_before_rename_hook(std::function<void(const std::string&, const std::string&)> hook);

}  // namespace nepa
