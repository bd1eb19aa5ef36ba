// Crop, resize and mask for the U-Net input, batched across frames in one launch.
//
// One thread per pixel of the 320x320 window; blockIdx.z is the frame. The window is sampled
// straight from the frame (no intermediate 328 image) with the arithmetic of
// kernels/reference.py: src = (dst + 0.5) * side / 328 - 0.5, clamped to the box, then the
// two taps clamped to the frame.
//
// meta: int64 [B, 8] = frame device pointer, width, height, row pitch in bytes, x0, y0, x1, y1
// (frames are BGR uint8 HWC, pixels packed, rows `pitch` bytes apart; boxes have exclusive ends).
// out: [B, 6, 320, 320] float32 or float16 (as raw bits), 0-1 BGR: channels 0-2 the window,
// channels 3-5 the same window with rows 5..309, columns 5..314 set to 0.
//
// paste_blend.cu includes this file for the shared sampler.

#ifndef SYNCTALK_CROP_MASK_CU
#define SYNCTALK_CROP_MASK_CU

#define CROP 328
#define WINDOW 320
#define RING 4
#define MASK_R0 5
#define MASK_R1 310
#define MASK_C0 5
#define MASK_C1 315
#define META 8

struct Tap {
    int i0;
    int i1;
    float w;
};

struct Frame {
    const unsigned char* data;
    int width;
    int height;
    long long pitch;
    int x0;
    int y0;
    int x1;
    int y1;
};

__device__ __forceinline__ Frame load_frame(const long long* meta, int b) {
    const long long* m = meta + (long long)META * b;
    Frame f;
    f.data = (const unsigned char*)m[0];
    f.width = (int)m[1];
    f.height = (int)m[2];
    f.pitch = m[3];
    f.x0 = (int)m[4];
    f.y0 = (int)m[5];
    f.x1 = (int)m[6];
    f.y1 = (int)m[7];
    return f;
}

// Frame taps of destination index `dst` for a side -> dst_size resize of a box starting at origin.
__device__ __forceinline__ Tap frame_tap(float dst, int side, int dst_size, int origin, int limit) {
    float scale = (float)side / (float)dst_size;
    float c = fminf(fmaxf((dst + 0.5f) * scale - 0.5f, 0.0f), (float)(side - 1));
    float base = floorf(c);
    int i = origin + (int)base;
    Tap t;
    t.i0 = min(max(i, 0), limit - 1);
    t.i1 = min(max(i + 1, 0), limit - 1);
    t.w = c - base;
    return t;
}

// Bilinear BGR sample (0-255) of the frame at crop-space position (row, col) of a CROP resize,
// with OpenCV's 8-bit INTER_LINEAR arithmetic (what kernels.cpu runs): weights on 11 bits,
// integer horizontal sums, and the vertical pass of its SIMD path with its rounding. The
// result is a whole grey level, equal to the CPU path's in all but about 1 pixel in 10^4
// (within 0.8 grey levels of the float reference), so GPU and CPU crops agree.
__device__ __forceinline__ void sample_crop(const Frame& f, float row, float col, float v[3]) {
    Tap ty = frame_tap(row, f.y1 - f.y0, CROP, f.y0, f.height);
    Tap tx = frame_tap(col, f.x1 - f.x0, CROP, f.x0, f.width);
    const unsigned char* r0 = f.data + ty.i0 * f.pitch;
    const unsigned char* r1 = f.data + ty.i1 * f.pitch;
    int a = tx.i0 * 3;
    int b = tx.i1 * 3;
    int ax1 = (int)rintf(tx.w * 2048.0f), ax0 = 2048 - ax1;
    int ay1 = (int)rintf(ty.w * 2048.0f), ay0 = 2048 - ay1;
    for (int c = 0; c < 3; ++c) {
        int top = (int)r0[a + c] * ax0 + (int)r0[b + c] * ax1;
        int bottom = (int)r1[a + c] * ax0 + (int)r1[b + c] * ax1;
        v[c] = (float)((((ay0 * (top >> 4)) >> 16) + ((ay1 * (bottom >> 4)) >> 16) + 2) >> 2);
    }
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }

__device__ __forceinline__ void store(unsigned short* p, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    *p = h;
}

template <typename T>
__device__ __forceinline__ void crop_mask_impl(const long long* meta, T* out, int batch) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int b = blockIdx.z;
    if (x >= WINDOW || y >= WINDOW || b >= batch) return;
    Frame f = load_frame(meta, b);
    float v[3];
    sample_crop(f, (float)(y + RING), (float)(x + RING), v);
    bool masked = y >= MASK_R0 && y < MASK_R1 && x >= MASK_C0 && x < MASK_C1;
    const long long plane = (long long)WINDOW * WINDOW;
    T* o = out + (long long)b * 6 * plane + (long long)y * WINDOW + x;
    for (int c = 0; c < 3; ++c) {
        float s = v[c] * (1.0f / 255.0f);
        store(o + c * plane, s);
        store(o + (c + 3) * plane, masked ? 0.0f : s);
    }
}

extern "C" __global__ void crop_mask_f32(const long long* meta, float* out, int batch) {
    crop_mask_impl<float>(meta, out, batch);
}

extern "C" __global__ void crop_mask_f16(const long long* meta, unsigned short* out, int batch) {
    crop_mask_impl<unsigned short>(meta, out, batch);
}

#endif
