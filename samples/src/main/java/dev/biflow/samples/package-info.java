/**
 * BiFlow-J samples: short, runnable programs that show the API (run with {@code samples/run.sh NAME}).
 * <ul>
 *   <li>{@link dev.biflow.samples.AutogradBasics}: tensors, ops, backward(), Grad.grad, no-grad scopes, AdamW;</li>
 *   <li>{@link dev.biflow.samples.Toy2DFlow}: a 2-D coupling flow trained by maximum likelihood, then sampled;</li>
 *   <li>{@link dev.biflow.samples.SampleBiFlow}: loading a forward flow and its BiFlow inverse, 1-NFE sampling to a PNG grid.</li>
 * </ul>
 */
package dev.biflow.samples;
