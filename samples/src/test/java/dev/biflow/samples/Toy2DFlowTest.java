package dev.biflow.samples;

import dev.biflow.engine.Tensor;
import dev.biflow.flow.data.Toy2D;
import org.junit.jupiter.api.Test;

import java.io.PrintStream;
import java.io.OutputStream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class Toy2DFlowTest {
    private static final PrintStream QUIET = new PrintStream(OutputStream.nullOutputStream());

    /** A short run of the example's training: the NLL must fall well below the standard normal's, and samples must look like the data. */
    @Test
    void trainingLowersTheNllAndSamplesMatchTheData() {
        Toy2DFlow.Result r = Toy2DFlow.train(Toy2D.TWO_MOONS, 200, 128, 0, 1, QUIET);
        // the untrained flow is the identity, so it starts at the closed-form N(0, I) NLL of the data
        assertEquals(r.gaussianNll(), r.initialNll(), 1e-3, "initial NLL is the standard normal's");
        assertTrue(r.finalNll() < r.initialNll() - 0.3, "NLL " + r.initialNll() + " -> " + r.finalNll() + " should fall by > 0.3 nats/dim");
        assertTrue(r.finalNll() < r.gaussianNll() - 0.3, "final NLL " + r.finalNll() + " vs N(0, I) " + r.gaussianNll());

        int n = r.heldOut().size(0);
        int[][] data = Toy2DFlow.histogram(r.heldOut(), 20, 10, 2.5), samples = Toy2DFlow.histogram(r.samples(), 20, 10, 2.5);
        int[][] gauss = Toy2DFlow.histogram(Tensor.randn(new dev.biflow.engine.Rng(5), n, 2), 20, 10, 2.5);
        double trained = Toy2DFlow.overlap(data, samples, n, n), baseline = Toy2DFlow.overlap(data, gauss, n, n);
        System.out.printf("Toy2DFlow test: NLL %.3f -> %.3f nats/dim in %.1f s; histogram overlap %.2f (N(0, I) noise: %.2f)%n",
                r.initialNll(), r.finalNll(), r.seconds(), trained, baseline);
        assertTrue(trained > baseline + 0.1, "samples overlap the data " + trained + ", plain Gaussian noise " + baseline);

        String art = Toy2DFlow.renderSideBySide(data, "data", samples, "samples");
        assertEquals(10 + 3, art.lines().count(), "title, two borders and one line per row");
    }

    @Test
    void histogramPutsPointsInTheRightCells() {
        // (x, y) = (-2, 2): left column, top row; (2, -2): right column, bottom row; (9, 9): outside, dropped
        Tensor p = Tensor.of(new float[]{-2, 2, 2, -2, 9, 9}, 3, 2);
        int[][] h = Toy2DFlow.histogram(p, 4, 2, 2.5);
        assertEquals(1, h[0][0]);
        assertEquals(1, h[1][3]);
        int total = 0;
        for (int[] row : h) for (int v : row) total += v;
        assertEquals(2, total);
        assertEquals(1.0, Toy2DFlow.overlap(h, h, 2, 2), 1e-12);
        assertEquals(0.5 * Math.log(2 * Math.PI) + 0.5 * (4 + 4 + 4 + 4 + 81 + 81) / 6.0, Toy2DFlow.standardNormalNll(p), 1e-6);
    }
}
