// The dashboard's only script: the funnel chart (Chart.js, vendored), confirmations, and the
// period form's dates shown only for "between…".
(function () {
  "use strict";

  function funnelChart() {
    var source = document.getElementById("funnel-data");
    var canvas = document.getElementById("funnel-chart");
    if (!source || !canvas || !window.Chart) {
      return;
    }
    var data = JSON.parse(source.textContent);
    function hours(value) {
      if (value === null) { return "no one yet"; }
      return value < 48 ? value.toFixed(1) + " h" : (value / 24).toFixed(1) + " days";
    }
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { label: "Reached", data: data.reached, backgroundColor: "#2563eb" },
          { label: "Now at", data: data.current, backgroundColor: "#93c5fd" }
        ]
      },
      options: {
        indexAxis: "y",
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { beginAtZero: true, ticks: { precision: 0 } } },
        plugins: {
          legend: { position: "bottom" },
          tooltip: {
            callbacks: {
              afterBody: function (items) {
                var i = items[0].dataIndex;
                var conversion = data.conversion[i];
                return [
                  "Conversion from previous: " +
                    (conversion === null ? "—" : Math.round(conversion * 100) + "%"),
                  "Median time to reach: " + hours(data.median_hours[i])
                ];
              }
            }
          }
        }
      }
    });
  }

  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
        }
      });
    });
  }

  function periodDates() {
    var select = document.getElementById("period");
    if (!select) {
      return;
    }
    select.addEventListener("change", function () {
      select.form.classList.toggle("custom", select.value === "custom");
    });
  }

  funnelChart();
  confirmations();
  periodDates();
})();
