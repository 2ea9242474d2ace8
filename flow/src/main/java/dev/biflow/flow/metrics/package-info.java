// Sample-quality metrics graded by the project's evaluation classifier, FashionNet-eval.
/**
 * FD-FashionNet ({@link dev.biflow.flow.metrics.FrechetDistance}), CS-FashionNet
 * ({@link dev.biflow.flow.metrics.ClassifierScore}), precision and recall
 * ({@link dev.biflow.flow.metrics.PrecisionRecall}) and class consistency
 * ({@link dev.biflow.flow.metrics.ClassConsistency}), together in
 * {@link dev.biflow.flow.metrics.Metrics}, with the real-vs-real reference that gives each its floor.
 * Named after the network that grades them; not comparable to published FID or Inception Score numbers.
 */
package dev.biflow.flow.metrics;
