/** BiFlow-J samples. */
package dev.biflow.samples;
