// defines: the on-disk format of a dataset prepared by sx_prep — HDF5 shards plus manifest.json.
// Writer: prep_*.cc (sx_prep). Reader: reader*.cc. Change both together and bump kShardFormatVersion.
//
// <out>/manifest.json
//   { "format_version": 1, "num_samples": N, "num_classes": K, "class_names": [...],
//     "encoding": "raw"|"jpeg", "channels": 1|3, "short_side": S|0, "center_crop": C|0,
//     "shards": [ {"file": "shard-00000.h5", "num_samples": n, "first_index": i, "crc32": "xxxxxxxx"} ... ],
//     "command": "sx_prep ..." }
//   Global sample index g lives in the shard with first_index <= g < first_index + num_samples, in
//   sample order of the input (list order / sorted folder walk / idx order).
//   crc32 is zlib's crc32 of the whole shard file, as 8 lowercase hex digits.
//
// <out>/shard-NNNNN.h5 (HDF5), datasets, all chunked, with the fletcher32 checksum filter so a
// corrupted chunk fails to read instead of returning garbage:
//   /data     uint8  (total_bytes)   every sample's bytes back to back: JPEG file bytes, or raw
//                                    pixels H·W·C interleaved (RGB order, or gray when C = 1)
//   /offsets  int64  (n + 1)         sample i is data[offsets[i], offsets[i+1])
//   /shapes   int32  (n, 3)          (H, W, C) of each decoded sample
//   /labels   int32  (n)
//   attributes on the root group: format_version (int), encoding (string "raw"|"jpeg"),
//   num_samples (int64), first_index (int64)
#pragma once

#include <cstdint>

namespace sx::dataplane {
inline constexpr int kShardFormatVersion = 1;
inline constexpr const char* kManifestName = "manifest.json";
// Readers validate what a file says before allocating for it:
inline constexpr int64_t kMaxShardSamples = int64_t{1} << 30;       // samples in one shard
inline constexpr int64_t kMaxSamplePixels = 2 * 89478485;          // H·W of one sample (2x PIL's bomb limit)
inline constexpr int64_t kShardBytesPerSample = 8 + 12 + 4;        // /offsets + /shapes + /labels, uncompressed
inline constexpr int64_t kMaxManifestBytes = int64_t{256} << 20;   // manifest.json
}  // namespace sx::dataplane
