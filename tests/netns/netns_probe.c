// netns_probe: an MPI program for the emulated cluster of launch/netns-cluster. Every rank reports
// its processor name (the emulated host); a ring exchange and an allreduce check that the ranks
// really talk to each other (over TCP between the namespaces). With a byte count it also times a
// rank 0 <-> 1 ping-pong and an allreduce of that size (rank 0 prints).
//   mpirun $(launch/netns-cluster mpirun-args) -np 3 netns_probe [BYTES]
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char* what) {
  fprintf(stderr, "netns_probe: %s\n", what);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

// Seconds per round trip of `bytes` between ranks 0 and 1 (other ranks idle).
static double time_pingpong(char* buf, int bytes, int iters, int rank) {
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) {
    if (rank == 0) {
      MPI_Send(buf, bytes, MPI_BYTE, 1, 7, MPI_COMM_WORLD);
      MPI_Recv(buf, bytes, MPI_BYTE, 1, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else if (rank == 1) {
      MPI_Recv(buf, bytes, MPI_BYTE, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(buf, bytes, MPI_BYTE, 0, 7, MPI_COMM_WORLD);
    }
  }
  return (MPI_Wtime() - t0) / iters;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  // Who runs where: rank 0 prints one line per rank.
  char name[MPI_MAX_PROCESSOR_NAME] = {0};
  int len = 0;
  MPI_Get_processor_name(name, &len);
  char* names = rank == 0 ? calloc((size_t)size, MPI_MAX_PROCESSOR_NAME) : NULL;
  MPI_Gather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, names, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0,
             MPI_COMM_WORLD);
  if (rank == 0) {
    for (int r = 0; r < size; ++r) printf("rank %d on %s\n", r, names + (size_t)r * MPI_MAX_PROCESSOR_NAME);
    free(names);
  }

  // Ring: everyone sends its rank to the right and must receive its left neighbour's.
  int left = (rank + size - 1) % size, right = (rank + 1) % size, got = -1;
  MPI_Sendrecv(&rank, 1, MPI_INT, right, 1, &got, 1, MPI_INT, left, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  if (got != left) fail("ring exchange returned the wrong value");
  long sum = 0, mine = rank;
  MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  if (sum != (long)size * (size - 1) / 2) fail("allreduce of the ranks returned the wrong sum");
  if (rank == 0) printf("ring and allreduce ok on %d ranks\n", size);

  if (argc > 1 && size >= 2) {
    int bytes = atoi(argv[1]);
    if (bytes < 4) fail("BYTES must be >= 4");
    char* buf = malloc((size_t)bytes);
    memset(buf, 1, (size_t)bytes);
    int iters = bytes <= 65536 ? 200 : bytes <= (4 << 20) ? 20 : 3;
    time_pingpong(buf, bytes, 2, rank);  // warm up the connection
    double rtt = time_pingpong(buf, bytes, iters, rank);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < iters; ++i)
      MPI_Allreduce(MPI_IN_PLACE, buf, bytes / 4, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    double ar = (MPI_Wtime() - t0) / iters;
    if (rank == 0)
      printf("bytes %d: ping-pong one-way %.1f us (%.3f GB/s); allreduce np=%d %.1f us (%.3f GB/s algbw)\n",
             bytes, rtt / 2 * 1e6, bytes / (rtt / 2) / 1e9, size, ar * 1e6, bytes / ar / 1e9);
    free(buf);
  }
  MPI_Finalize();
  return 0;
}
