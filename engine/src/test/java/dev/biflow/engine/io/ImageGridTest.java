// ImageGrid: layout, value mapping and padding of written PNGs, checked pixel by pixel after reading them back.
package dev.biflow.engine.io;

import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import javax.imageio.ImageIO;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.*;

class ImageGridTest {
    @TempDir Path dir;

    @Test
    void mappingMatchesTorchvisionSaveImage() {
        assertEquals(0, ImageGrid.toByte(-1f, -1f, 1f));
        assertEquals(255, ImageGrid.toByte(1f, -1f, 1f));
        assertEquals(128, ImageGrid.toByte(0f, -1f, 1f)); // 127.5 + 0.5 truncates to 128
        assertEquals(0, ImageGrid.toByte(-7f, -1f, 1f)); // clamped
        assertEquals(255, ImageGrid.toByte(3f, -1f, 1f));
        assertEquals(0, ImageGrid.toByte(Float.NaN, -1f, 1f));
        assertEquals(26, ImageGrid.toByte(0.1f, 0f, 1f)); // 25.5 + 0.5
    }

    @Test
    void grayscaleGridLayoutAndPixels() throws IOException {
        // 5 images of 2x3 in [-1, 1]; image i is constant (i - 2) / 2 except pixel (1, 2) which is +1.
        int n = 5, h = 2, w = 3;
        float[] v = new float[n * h * w];
        for (int i = 0; i < n; i++)
            for (int p = 0; p < h * w; p++) v[i * h * w + p] = p == h * w - 1 ? 1f : (i - 2) / 2f;
        Path f = dir.resolve("grid.png");
        ImageGrid.write(f, Tensor.of(v, n, 1, h, w), -1f, 1f, 2, 1, 2);
        BufferedImage img = ImageIO.read(f.toFile());
        // 2 columns, 3 rows; cells of (3*2 + 1) x (2*2 + 1) plus the outer padding.
        assertEquals(2 * 7 + 1, img.getWidth());
        assertEquals(3 * 5 + 1, img.getHeight());
        assertEquals(1, img.getRaster().getNumBands());
        int[] expected = {0, 64, 128, 191, 255}; // (i-2)/2 mapped: 0, 63.75+0.5, 127.5+0.5, 191.25+0.5, 255
        for (int i = 0; i < n; i++) {
            int x0 = 1 + (i % 2) * 7, y0 = 1 + (i / 2) * 5;
            assertEquals(expected[i], img.getRaster().getSample(x0, y0, 0), "image " + i + " top-left");
            assertEquals(expected[i], img.getRaster().getSample(x0 + 1, y0 + 1, 0), "scaled copy of the same pixel");
            assertEquals(255, img.getRaster().getSample(x0 + 5, y0 + 3, 0), "image " + i + " pixel (1, 2), enlarged");
            assertEquals(0, img.getRaster().getSample(x0 - 1, y0, 0), "padding left of image " + i);
        }
        assertEquals(0, img.getRaster().getSample(8, 11, 0), "empty sixth cell is padding colour");
        // read(...) maps pixels back into the value range.
        Tensor back = ImageGrid.read(f, -1f, 1f);
        assertArrayEquals(new int[]{1, 1, 16, 15}, back.shape());
        assertEquals(1f, back.get(0, 0, 1 + 3, 1 + 5), 1e-6);
        assertEquals(-1f, back.get(0, 0, 1, 1), 1e-6);
    }

    @Test
    void rgbGridKeepsChannels() throws IOException {
        // One 1x2 image: pixel 0 pure red, pixel 1 (0, 128, 255) in [0, 255] units.
        float[] v = {255, 0, /* G */ 0, 128, /* B */ 0, 255};
        Path f = dir.resolve("rgb.png");
        ImageGrid.write(f, Tensor.of(v, 1, 3, 1, 2), 0f, 255f, 8, 0, 1);
        BufferedImage img = ImageIO.read(f.toFile());
        assertEquals(2, img.getWidth());
        assertEquals(1, img.getHeight());
        assertEquals(0xFF0000, img.getRGB(0, 0) & 0xFFFFFF);
        assertEquals(0x0080FF, img.getRGB(1, 0) & 0xFFFFFF);
        Tensor back = ImageGrid.read(f, 0f, 255f);
        assertArrayEquals(new int[]{1, 3, 1, 2}, back.shape());
        assertArrayEquals(v, back.data());
    }

    @Test
    void grayRoundTripThroughPngIsExactOnThe255Grid() throws IOException {
        float[] v = new float[256];
        for (int i = 0; i < 256; i++) v[i] = i;
        Path f = dir.resolve("ramp.png");
        ImageGrid.write(f, Tensor.of(v, 1, 1, 16, 16), 0f, 255f, 1, 0, 1);
        assertArrayEquals(v, ImageGrid.read(f, 0f, 255f).data());
    }

    @Test
    void rejectsBadArguments() {
        Tensor ok = Tensor.zeros(2, 1, 4, 4);
        assertThrows(IllegalArgumentException.class, () -> ImageGrid.toImage(Tensor.zeros(2, 4, 4), -1, 1, 8, 2, 1));
        assertThrows(IllegalArgumentException.class, () -> ImageGrid.toImage(Tensor.zeros(2, 2, 4, 4), -1, 1, 8, 2, 1));
        assertThrows(IllegalArgumentException.class, () -> ImageGrid.toImage(ok, 1, 1, 8, 2, 1));
        assertThrows(IllegalArgumentException.class, () -> ImageGrid.toImage(ok, -1, 1, 0, 2, 1));
        assertThrows(IllegalArgumentException.class, () -> ImageGrid.toImage(ok, -1, 1, 8, 2, 100000));
    }

    @Test
    void unreadableImageIsACorruptFile() throws IOException {
        Path f = dir.resolve("not.png");
        java.nio.file.Files.write(f, new byte[]{1, 2, 3, 4});
        assertThrows(CorruptFileException.class, () -> ImageGrid.read(f, 0, 1));
    }
}
