set terminal pngcairo size 1000,620 noenhanced
set output '/work/main/bench/results/throughput.png'
set datafile missing 'NaN'
set logscale x 2
set xtics (1,8,32,128)
set xrange [0.8:170]
set xlabel 'concurrent connections'
set ylabel 'calls per second'
set grid
set key below
set title 'Throughput vs concurrent connections (full, 2026-11-26 01:06:05 UTC)'
plot '/work/main/bench/results/throughput.dat' using 1:2 with linespoints lw 2 dt 1 lc rgb '#555555' title 'floor (C load client)', \
     '/work/main/bench/results/throughput.dat' using 1:3 with linespoints lw 2 dt 1 lc rgb '#d95f02' title 'pyro4 json thread (C load client)', \
     '/work/main/bench/results/throughput.dat' using 1:4 with linespoints lw 2 dt 1 lc rgb '#e6ab02' title 'pyro4 json multiplex (C load client)', \
     '/work/main/bench/results/throughput.dat' using 1:5 with linespoints lw 2 dt 1 lc rgb '#1b9e77' title 'springrun (C load client)', \
     '/work/main/bench/results/throughput.dat' using 1:6 with linespoints lw 2 dt 2 lc rgb '#555555' title 'floor (client processes)', \
     '/work/main/bench/results/throughput.dat' using 1:7 with linespoints lw 2 dt 2 lc rgb '#d95f02' title 'pyro4 json thread (client processes)', \
     '/work/main/bench/results/throughput.dat' using 1:8 with linespoints lw 2 dt 2 lc rgb '#e6ab02' title 'pyro4 json multiplex (client processes)', \
     '/work/main/bench/results/throughput.dat' using 1:9 with linespoints lw 2 dt 2 lc rgb '#1b9e77' title 'springrun (client processes)'
