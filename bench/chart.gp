# gnuplot -e "datafile='summary.dat'; outfile='chart.svg'" bench/chart.gp
set terminal svg size 1000,480 dynamic font "sans,11"
set output outfile
set multiplot layout 1,2 title "nginx-tracker bench (1 nginx worker, medians)"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.8
set xtics rotate by -35 scale 0
set grid ytics
set yrange [0:*]
set title "req/s relative to empty_gif"
plot datafile using 2:xtic(1) notitle lc rgb "#4c78a8"
set title "nginx worker CPU µs per request"
plot datafile using 3:xtic(1) notitle lc rgb "#f58518"
unset multiplot
