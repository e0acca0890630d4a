// cuDNN loading and descriptors (cuda/src/cudnn.cpp) without a GPU: the candidate paths, the
// message when nothing loads, and, where a real libcudnn.so.9 is at hand (EMBER_CUDNN), that
// cuDNN accepts ember's descriptors and agrees on the output size.
#include <cstdlib>
#include <string>

#include "cuda/src/cudnn.h"
#include "doctest/doctest.h"

using namespace ember;
using namespace ember::cuda;

TEST_CASE("cudnn_candidates: explicit path, then $EMBER_CUDNN, then the sonames") {
  auto c = cudnn_candidates("/wheel/libcudnn.so.9", "/env/libcudnn.so.9");
  REQUIRE(c.size() == 4);
  CHECK(c[0] == "/wheel/libcudnn.so.9");
  CHECK(c[1] == "/env/libcudnn.so.9");
  CHECK(c[2] == "libcudnn.so.9");
  CHECK(cudnn_candidates("", "").size() == 2);
}

TEST_CASE("cudnn_open: a path that does not load is named, with the fix") {
  dnn::Api api;
  std::string error;
  CHECK_FALSE(cudnn_open({"/nonexistent/libcudnn.so.9"}, &api, &error));
  CHECK(error.find("/nonexistent/libcudnn.so.9") != std::string::npos);
  CHECK(error.find("pip install nvidia-cudnn-cu13") != std::string::npos);
  CHECK(api.lib == nullptr);
}

TEST_CASE("cudnn: a real library accepts ember's conv descriptors") {
  dnn::Api api;
  std::string error;
  const char* env = std::getenv("EMBER_CUDNN");
  if (!env || !cudnn_open({env}, &api, &error)) {
    MESSAGE("skipped: no libcudnn.so.9 here (set EMBER_CUDNN to one to run this)");
    return;
  }
  CHECK(api.version / 10000 == 9);
  //               N  C   H   W   M  G  kh kw sh sw dh dw ph pw OH OW
  DnnConv plain{2, 16, 13, 11, 24, 1, 3, 3, 1, 1, 1, 1, 1, 1, 13, 11};
  DnnConv strided{1, 8, 17, 16, 4, 2, 3, 5, 2, 3, 1, 1, 1, 2, 9, 6};
  DnnConv dilated{3, 4, 20, 20, 8, 4, 3, 3, 1, 1, 2, 2, 0, 0, 16, 16};
  DnnConv one_d{2, 6, 1, 50, 5, 1, 1, 7, 1, 1, 1, 1, 0, 3, 1, 50};
  for (DnnConv c : {plain, strided, dilated, one_d}) {
    for (int type : {dnn::kFloat, dnn::kHalf, dnn::kBFloat16}) {
      CAPTURE(c.N);
      CAPTURE(type);
      c.type = type;
      c.math = type == dnn::kFloat ? dnn::kFmaMath : dnn::kTensorOpMath;
      CHECK(CudnnConv(api, c).refused() == "");
    }
    DnnConv end_pad = c;  // an output size only asymmetric (end) pads give
    end_pad.OW += 1;
    CHECK(CudnnConv(api, end_pad).refused().find("end pads") != std::string::npos);
  }
}
