// Resize-back and feathered paste of the U-Net output, in place, batched in one launch.
//
// One thread per frame pixel of the visible box (the box clipped to the frame); blockIdx.z is
// the frame. Each pixel samples the 328-space image bilinearly (the prediction inside the
// 320 window, the resized source in the 4 px ring) and blends it with
// alpha = ramp(row) * ramp(col): 0 over the ring band, then a raised cosine over
// feather * side pixels (arithmetic of kernels/reference.py).
//
// In place without a race: ring samples read only pixels whose alpha is 0, and a pixel with
// alpha 0 is never written, so no thread reads a pixel that another thread writes.
//
// meta: int64 [B, 8] as in crop_mask.cu; pred: [B, 3, 320, 320] float32 or float16 bits, 0-1 BGR.

#include "crop_mask.cu"

__device__ __forceinline__ float load(const float* p) { return *p; }

__device__ __forceinline__ float load(const unsigned short* p) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(*p));
    return f;
}

// Alpha along one axis for pixel x of the visible box [lo, hi) of a box of this side.
__device__ __forceinline__ float ramp(int x, int lo, int hi, int side, float feather) {
    float d = fminf((float)(x - lo) + 0.5f, (float)(hi - x) - 0.5f);
    float margin = 3.5f * (float)side / (float)CROP + 1.5f;
    float width = feather * (float)side;
    if (width <= 0.0f) return d > margin ? 1.0f : 0.0f;
    float t = fminf(fmaxf((d - margin) / width, 0.0f), 1.0f);
    return 0.5f - 0.5f * cospif(t);
}

// Crop-space taps of frame pixel `x` for a box starting at origin with this side.
__device__ __forceinline__ Tap crop_tap(int x, int origin, int side) {
    float scale = (float)CROP / (float)side;
    float c = fminf(fmaxf(((float)(x - origin) + 0.5f) * scale - 0.5f, 0.0f), (float)(CROP - 1));
    float base = floorf(c);
    Tap t;
    t.i0 = (int)base;
    t.i1 = min(t.i0 + 1, CROP - 1);
    t.w = c - base;
    return t;
}

// The 328-space image at integer tap (row, col): prediction in the window, source in the ring.
template <typename P>
__device__ __forceinline__ void crop_space(const Frame& f, const P* pred, int row, int col,
                                           float v[3]) {
    if (row >= RING && row < RING + WINDOW && col >= RING && col < RING + WINDOW) {
        const long long plane = (long long)WINDOW * WINDOW;
        const P* p = pred + (long long)(row - RING) * WINDOW + (col - RING);
        for (int c = 0; c < 3; ++c) v[c] = load(p + c * plane) * 255.0f;
    } else {
        sample_crop(f, (float)row, (float)col, v);
    }
}

template <typename P>
__device__ __forceinline__ void paste_blend_impl(const long long* meta, const P* pred,
                                                 float feather, int batch) {
    int b = blockIdx.z;
    if (b >= batch) return;
    Frame f = load_frame(meta, b);
    int vx0 = max(f.x0, 0), vy0 = max(f.y0, 0);
    int vx1 = min(f.x1, f.width), vy1 = min(f.y1, f.height);
    int x = vx0 + blockIdx.x * blockDim.x + threadIdx.x;
    int y = vy0 + blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= vx1 || y >= vy1) return;
    int sx = f.x1 - f.x0, sy = f.y1 - f.y0;
    float alpha = ramp(y, vy0, vy1, sy, feather) * ramp(x, vx0, vx1, sx, feather);
    if (alpha <= 0.0f) return;

    const P* p = pred + (long long)b * 3 * WINDOW * WINDOW;
    Tap ty = crop_tap(y, f.y0, sy);
    Tap tx = crop_tap(x, f.x0, sx);
    float a[3], bq[3], c[3], d[3];
    crop_space(f, p, ty.i0, tx.i0, a);
    crop_space(f, p, ty.i0, tx.i1, bq);
    crop_space(f, p, ty.i1, tx.i0, c);
    crop_space(f, p, ty.i1, tx.i1, d);

    unsigned char* px = (unsigned char*)f.data + y * f.pitch + x * 3;
    for (int k = 0; k < 3; ++k) {
        float top = a[k] * (1.0f - tx.w) + bq[k] * tx.w;
        float bottom = c[k] * (1.0f - tx.w) + d[k] * tx.w;
        float fresh = top * (1.0f - ty.w) + bottom * ty.w;
        float out = alpha * fresh + (1.0f - alpha) * (float)px[k];
        px[k] = (unsigned char)fminf(fmaxf(floorf(out + 0.5f), 0.0f), 255.0f);
    }
}

extern "C" __global__ void paste_blend_f32(const long long* meta, const float* pred, float feather,
                                           int batch) {
    paste_blend_impl<float>(meta, pred, feather, batch);
}

extern "C" __global__ void paste_blend_f16(const long long* meta, const unsigned short* pred,
                                           float feather, int batch) {
    paste_blend_impl<unsigned short>(meta, pred, feather, batch);
}
