// The one describer (io/h5_describe.hpp): what it records about datasets,
// links and attributes, that the record survives its JSON round trip (the
// child's pipe, the ranks' broadcast), and what it refuses before or while
// opening: paths that are not regular files (never opened, so a FIFO cannot
// block), files locked by a writer, and damaged files that crash HDF5 1.10
// itself (tests/fuzz/regressions), which end in one Error(input) instead of
// a dead process. Rank-local: rank 0 describes, the others wait.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <variant>

#include "core/isolated.hpp"
#include "io/h5_describe.hpp"
#include "io_test_util.hpp"

namespace ringattn::test {
namespace {

using Describe = IoTest;

void add_attr(hid_t loc, const char* name, hid_t type, const void* data, hsize_t n) {
  H5Handle space(RA_H5_CHECK(n == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr)),
                 H5Kind::dataspace);
  H5Handle a(RA_H5_CHECK(H5Acreate2(loc, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT)),
             H5Kind::attribute);
  RA_H5_CHECK(H5Awrite(a.get(), type, data));
}

// o (chunked f32) and lse, a group, a dangling soft link, root attributes.
void write_output_like(const std::string& p) {
  write_h5(p, {{"o", {1, 2, 8, 4}, FileType::f32, 5, true},
               {"lse", {1, 2, 8}, FileType::f32, 6, false}});
  H5Handle f(RA_H5_CHECK(H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)), H5Kind::file);
  H5Handle g(RA_H5_CHECK(H5Gcreate2(f.get(), "grp", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
             H5Kind::group);
  RA_H5_CHECK(H5Lcreate_soft("/nowhere", f.get(), "gone", H5P_DEFAULT, H5P_DEFAULT));
  const std::int64_t one = 1;
  const double scale = 0.125;
  const std::int64_t ints[3] = {3, 1, 4};
  const double reals[2] = {2.5, -1.0};
  add_attr(f.get(), "complete", H5T_NATIVE_INT64, &one, 0);
  add_attr(f.get(), "scale", H5T_NATIVE_DOUBLE, &scale, 0);
  add_attr(f.get(), "ints", H5T_NATIVE_INT64, ints, 3);
  add_attr(f.get(), "reals", H5T_NATIVE_DOUBLE, reals, 2);
  H5Handle str(RA_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Kind::datatype);
  RA_H5_CHECK(H5Tset_size(str.get(), H5T_VARIABLE));
  const char* text = "{\"causal\": true}";
  add_attr(f.get(), "config", str.get(), &text, 0);
}

TEST_F(Describe, RecordsDatasetsLinksAndAttributes) {
  const std::string p = path("out.h5");
  on_root([&] {
    write_output_like(p);
    const H5FileDesc d = describe_h5_file(p, H5DescribeWhat{}, "file '" + p + "'");
    EXPECT_EQ(d.root, (std::vector<std::string>{"gone", "grp", "lse", "o"}));
    ASSERT_NE(d.dataset("o"), nullptr);
    const H5DatasetDesc& o = *d.dataset("o");
    EXPECT_EQ(o.dims, (std::vector<std::int64_t>{1, 2, 8, 4}));
    EXPECT_EQ(o.type.name, "f32");
    EXPECT_EQ(o.type.order, "le");
    EXPECT_EQ(o.layout, "chunked");
    ASSERT_EQ(o.filters.size(), 1u);
    EXPECT_EQ(o.filters[0].name, "deflate");
    EXPECT_TRUE(o.filters[0].decodes);
    EXPECT_EQ(o.file, p);
    EXPECT_EQ(d.object("grp")->object, H5Object::group);
    EXPECT_EQ(d.object("gone")->object, H5Object::dangling);
    EXPECT_EQ(d.object("gone")->link, "/nowhere");
    EXPECT_EQ(d.dataset("gone"), nullptr);
    EXPECT_EQ(std::get<std::int64_t>(d.attribute("complete")->value), 1);
    EXPECT_EQ(std::get<double>(d.attribute("scale")->value), 0.125);
    EXPECT_EQ(std::get<std::vector<std::int64_t>>(d.attribute("ints")->value),
              (std::vector<std::int64_t>{3, 1, 4}));
    EXPECT_EQ(std::get<std::vector<double>>(d.attribute("reals")->value),
              (std::vector<double>{2.5, -1.0}));
    EXPECT_EQ(std::get<std::string>(d.attribute("config")->value), "{\"causal\": true}");

    // The JSON round trip keeps every field, the attributes' alternatives too.
    const H5FileDesc back = nlohmann::json(d).get<H5FileDesc>();
    EXPECT_EQ(nlohmann::json(back), nlohmann::json(d));
    EXPECT_EQ(back.attribute("complete")->value.index(), d.attribute("complete")->value.index());
  });
}

TEST_F(Describe, NamesAskedForThatAreMissingOrNested) {
  const std::string p = path("in.h5");
  on_root([&] {
    write_h5(p, qkv_specs({1, 1, 1, 4, 4, 4}, FileType::f32, false));
    H5DescribeWhat what;
    what.root_objects = false;
    what.attributes = false;
    what.names = {"q", "nope", "a/b/c"};
    const H5FileDesc d = describe_h5_file(p, what, "file");
    EXPECT_EQ(d.objects.size(), 3u);
    EXPECT_EQ(d.object("q")->object, H5Object::dataset);
    EXPECT_EQ(d.object("nope")->object, H5Object::missing);
    EXPECT_EQ(d.object("a/b/c")->object, H5Object::missing);
    EXPECT_TRUE(d.attributes.empty());
  });
}

// Refused by kind before any open: a FIFO would block the open forever.
TEST_F(Describe, PathsThatAreNotRegularFilesAreNeverOpened) {
  const std::string fifo = path("fifo.h5");
  on_root([&] {
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& [p, kind] : std::vector<std::pair<std::string, std::string>>{
             {fifo, "FIFO"}, {"/dev/null", "character device"}, {dir_, "directory"}})
      expect_agreed_error(MPI_COMM_SELF,
                          [&] { (void)describe_h5_file(p, H5DescribeWhat{}, "file '" + p + "'"); },
                          ErrorClass::io, {p, kind});
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  });
}

TEST_F(Describe, ADanglingSymlinkIsNamedAsOne) {
  const std::string p = path("link.h5");
  on_root([&] {
    ASSERT_EQ(::symlink("no-such-target.h5", p.c_str()), 0);
    expect_agreed_error(
        MPI_COMM_SELF, [&] { (void)describe_h5_file(p, H5DescribeWhat{}, "file '" + p + "'"); },
        ErrorClass::io, {p, "symbolic link", "no-such-target.h5", "does not exist"});
  });
}

// HDF5 takes flock(LOCK_EX) on a file it opens for writing; the lock held
// here stands for such a writer in another process.
TEST_F(Describe, AFileLockedByAWriterIsSaidToBe) {
  const std::string p = path("in.h5");
  on_root([&] {
    write_h5(p, qkv_specs({1, 1, 1, 4, 4, 4}, FileType::f32, false));
    const int fd = ::open(p.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    expect_agreed_error(MPI_COMM_SELF,
                        [&] { (void)describe_h5_file(p, H5DescribeWhat{}, "file '" + p + "'"); },
                        ErrorClass::io, {p, "locked by another process", "writing"});
    ::close(fd);
    EXPECT_NO_THROW((void)describe_h5_file(p, H5DescribeWhat{}, "file"));
  });
}

// Files that crash, loop or nearly crash HDF5 1.10 itself: one input error
// each (the loop within the shortened deadline).
TEST_F(Describe, DamagedFilesEndInOneInputError) {
  if (!isolation_fork_safe())
    GTEST_SKIP()
        << "AddressSanitizer build: the describer runs in-process (core/isolated.hpp), "
           "so a file that crashes HDF5 would crash the test; the fuzz stage replays these";
  on_root([&] {
    ::setenv("RINGATTN_TEST_DESCRIBE_DEADLINE", "3", 1);
    int seen = 0;
    for (const auto& e : std::filesystem::directory_iterator(RINGATTN_FUZZ_REGRESSIONS)) {
      if (e.path().extension() == ".md") continue;
      const std::string p = e.path().string();
      expect_agreed_error(MPI_COMM_SELF,
                          [&] { (void)describe_h5_file(p, H5DescribeWhat{}, "file '" + p + "'"); },
                          ErrorClass::input, {p});
      ++seen;
    }
    ::unsetenv("RINGATTN_TEST_DESCRIBE_DEADLINE");
    EXPECT_GE(seen, 5);
  });
}

}  // namespace
}  // namespace ringattn::test
