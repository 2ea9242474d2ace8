// Sample grids as PNG: a batch (N, C, H, W) tiled into one image, like torchvision's make_grid + save_image.
package dev.biflow.engine.io;

import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

import javax.imageio.IIOException;
import javax.imageio.ImageIO;
import java.awt.image.BufferedImage;
import java.awt.image.DataBufferByte;
import java.awt.image.DataBufferInt;
import java.awt.image.IndexColorModel;
import java.awt.image.Raster;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Tiles a batch of images into one picture and writes it as PNG.
 *
 * <p>Layout follows torchvision's {@code make_grid}: {@code nrow} images per row, rows filled
 * left to right, {@code padding} pixels of black (0) around and between the cells. Each image
 * may be enlarged {@code scale} times (nearest neighbour) so 28x28 samples are viewable; padding
 * is not scaled. Values map linearly from {@code [lo, hi]} to 0..255 exactly as
 * {@code save_image(normalize=True, value_range=(lo, hi))} does: clamp to the range, scale to
 * 0..255, add 0.5, truncate. NaN becomes 0. One channel gives a grayscale PNG, three an RGB one.
 */
public final class ImageGrid {
    private ImageGrid() {}

    /** Keeps a mistaken huge grid from exhausting memory: 2^28 pixels (16384 x 16384). */
    private static final long MAX_PIXELS = 1L << 28;

    /** The grid as an image (TYPE_BYTE_GRAY for C = 1, TYPE_INT_RGB for C = 3). */
    public static BufferedImage toImage(Tensor images, float lo, float hi, int nrow, int padding, int scale) {
        int[] s = images.shape();
        if (s.length != 4 || (s[1] != 1 && s[1] != 3))
            throw new IllegalArgumentException("ImageGrid: images must be (N, C, H, W) with C = 1 or 3, got " + Shape.str(s)
                    + "; reshape a (N, H, W) batch to (N, 1, H, W)");
        if (s[0] == 0 || s[2] == 0 || s[3] == 0)
            throw new IllegalArgumentException("ImageGrid: nothing to draw in a batch of shape " + Shape.str(s));
        if (!(hi > lo) || !Float.isFinite(lo) || !Float.isFinite(hi))
            throw new IllegalArgumentException("ImageGrid: value range [" + lo + ", " + hi + "] must be finite with lo < hi"
                    + " (e.g. -1, 1 for model outputs, 0, 255 for raw pixels)");
        if (nrow < 1 || padding < 0 || scale < 1)
            throw new IllegalArgumentException("ImageGrid: need nrow >= 1, padding >= 0, scale >= 1; got nrow=" + nrow
                    + ", padding=" + padding + ", scale=" + scale);
        int n = s[0], c = s[1], h = s[2], w = s[3];
        int cols = Math.min(nrow, n), rows = (n + cols - 1) / cols;
        long cellW = (long) w * scale + padding, cellH = (long) h * scale + padding;
        long gw = cols * cellW + padding, gh = rows * cellH + padding;
        if (gw * gh > MAX_PIXELS)
            throw new IllegalArgumentException("ImageGrid: a " + gw + "x" + gh + " grid is too large; use a smaller scale or fewer images");
        int W = (int) gw, H = (int) gh;
        BufferedImage img = new BufferedImage(W, H, c == 1 ? BufferedImage.TYPE_BYTE_GRAY : BufferedImage.TYPE_INT_RGB);
        float[] d = images.data();
        int plane = h * w;
        byte[] gray = c == 1 ? ((DataBufferByte) img.getRaster().getDataBuffer()).getData() : null;
        int[] rgb = c == 3 ? ((DataBufferInt) img.getRaster().getDataBuffer()).getData() : null;
        for (int i = 0; i < n; i++) {
            int x0 = padding + (int) ((i % cols) * cellW), y0 = padding + (int) ((i / cols) * cellH);
            int base = i * c * plane;
            for (int y = 0; y < h; y++) {
                for (int x = 0; x < w; x++) {
                    int p = base + y * w + x;
                    int v = c == 1 ? toByte(d[p], lo, hi)
                            : toByte(d[p], lo, hi) << 16 | toByte(d[p + plane], lo, hi) << 8 | toByte(d[p + 2 * plane], lo, hi);
                    for (int dy = 0; dy < scale; dy++) {
                        int row = (y0 + y * scale + dy) * W + x0 + x * scale;
                        for (int dx = 0; dx < scale; dx++) {
                            if (gray != null) gray[row + dx] = (byte) v;
                            else rgb[row + dx] = v;
                        }
                    }
                }
            }
        }
        return img;
    }

    /** Writes the grid as a PNG, atomically. */
    public static void write(Path path, Tensor images, float lo, float hi, int nrow, int padding, int scale) throws IOException {
        BufferedImage img = toImage(images, lo, hi, nrow, padding, scale);
        AtomicWrite.write(path, out -> {
            if (!ImageIO.write(img, "png", out)) throw new IOException("no PNG writer available in this JVM (javax.imageio)");
        });
    }

    /** Writes the grid with torchvision's defaults: padding 2, no enlargement. */
    public static void write(Path path, Tensor images, float lo, float hi, int nrow) throws IOException {
        write(path, images, lo, hi, nrow, 2, 1);
    }

    /** The pixel value for v: clamp to [lo, hi], scale to 0..255, round half up (float arithmetic, as torchvision). */
    public static int toByte(float v, float lo, float hi) {
        if (Float.isNaN(v)) return 0;
        float t = (Math.min(Math.max(v, lo), hi) - lo) / (hi - lo) * 255f + 0.5f;
        return (int) Math.min(Math.max(t, 0f), 255f);
    }

    /**
     * Reads an image (PNG, or anything ImageIO reads) as a (1, C, H, W) tensor, pixel p mapped to
     * {@code lo + p / 255 * (hi - lo)}: C = 1 for grayscale, 3 for color (alpha is dropped).
     */
    public static Tensor read(Path path, float lo, float hi) throws IOException {
        BufferedImage img;
        try (var in = Files.newInputStream(path)) {
            img = ImageIO.read(in);
        } catch (IIOException e) {
            throw new CorruptFileException(path.toString(), "the image data is corrupt (" + e.getMessage() + ")", e);
        }
        if (img == null)
            throw new CorruptFileException(path.toString(), "not an image format ImageIO can read (PNG, JPEG, BMP, GIF, TIFF)");
        int w = img.getWidth(), h = img.getHeight();
        Raster r = img.getRaster();
        boolean indexed = img.getColorModel() instanceof IndexColorModel;
        int c = indexed || r.getNumBands() >= 3 ? 3 : 1;
        float[] out = new float[c * h * w];
        float k = (hi - lo) / 255f;
        int maxSample = (1 << img.getSampleModel().getSampleSize(0)) - 1;
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                for (int ch = 0; ch < c; ch++) {
                    int p;
                    if (!indexed) {
                        // Raw samples: getRGB would push linear-gray images through a gamma conversion.
                        int sample = r.getSample(x, y, ch);
                        p = maxSample == 255 ? sample : Math.round(sample * 255f / maxSample);
                    } else {
                        p = (img.getRGB(x, y) >> (16 - 8 * ch)) & 0xFF;
                    }
                    out[(ch * h + y) * w + x] = lo + p * k;
                }
            }
        }
        return Tensor.of(out, 1, c, h, w);
    }
}
